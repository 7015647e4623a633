"""Templates that only put fields into text are rendered by joining their pieces: the same text as
jinja2's, with jinja2 still rendering (and failing) whenever the fast way does not apply."""

from __future__ import annotations

from typing import Any

import pytest

from evalpipe.pipeline.job.spec import PromptSpec
from evalpipe.pipeline.job.template_sandbox import MAX_RENDERED_CHARS
from evalpipe.pipeline.job.templates import PromptTemplates, Substitution, TemplateRenderError, template_environment

TEMPLATES = ["Q: {{ question }}\n", "{{question}}", "a {{ x }} b {{y}}{{ x }}\n\n", "{{- x -}}  \n z", "plain\n",
             "{{ x|upper }}", "{% if x %}{{ x }}{% endif %}", "{{ n }} + {{ x }}", "{{ range }}", ""]
ITEMS: list[dict[str, Any]] = [{"question": "hi\n", "x": " X ", "y": "Ÿ", "n": 3},
                               {"question": "", "x": "{{ not a template }}", "y": "\n", "n": None}]


@pytest.mark.parametrize("source", TEMPLATES)
def test_the_text_is_jinja2s(source: str) -> None:
    environment = template_environment()
    for item in ITEMS:
        expected = environment.from_string(source).render(item)
        rendered = PromptTemplates(PromptSpec(user=source), environment).render(item)
        assert [m.content for m in rendered] == [expected]


def test_only_text_and_bare_fields_are_substituted() -> None:
    environment = template_environment()
    assert Substitution.of(environment.parse("Q: {{ question }} / {{ other }}")) is not None
    for source in ("{{ x|upper }}", "{% if x %}{{ x }}{% endif %}", "{{ x.y }}", "{{ 'text' }}", "{{ x ~ y }}"):
        assert Substitution.of(environment.parse(source)) is None, source
    substitution = Substitution.of(environment.parse("{{ n }}"))
    assert substitution is not None and substitution.render({"n": 3}) is None  # a number: jinja2's text


def test_a_missing_field_fails_as_jinja2_says() -> None:
    templates = PromptTemplates(PromptSpec(system="Be brief.", user="Q: {{ question }}"))
    with pytest.raises(TemplateRenderError) as raised:
        templates.render({"other": "x"})
    assert raised.value.missing_field and raised.value.field == ("prompt", "user")
    assert "'question' is undefined" in str(raised.value)


def test_a_text_past_the_sandbox_limit_is_refused() -> None:
    templates = PromptTemplates(PromptSpec(user="Q: {{ question }}"))
    with pytest.raises(TemplateRenderError, match="past the sandbox's limits"):
        templates.render({"question": "x" * MAX_RENDERED_CHARS})
