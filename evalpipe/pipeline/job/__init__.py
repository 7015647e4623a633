"""The job file read, checked and expanded into tasks before any call is paid."""
