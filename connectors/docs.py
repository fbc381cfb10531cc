"""Reference documentation generated from the declarations (``hookline connectors``)."""
from __future__ import annotations

from .base import Field
from .registry import ACTIONS, CREDENTIALS


def _field_line(f: Field) -> str:
    flags = [f.type]
    if f.required:
        flags.append("required")
    if f.template:
        flags.append("template")
    if f.secret:
        flags.append("secret")
    if f.default not in (None, ""):
        flags.append(f"default {f.default!r}")
    if f.choices:
        flags.append("one of " + ", ".join(c[0] for c in f.choices))
    return f"- `{f.name}` ({'; '.join(flags)}): {f.label}. {f.help}".rstrip()


def markdown() -> str:
    out = ["# Connectors", ""]
    for action in sorted(ACTIONS.values(), key=lambda a: (a.group, a.key)):
        out += [f"## {action.label} (`{action.key}`)", "", action.description, ""]
        if action.credential:
            need = "required" if action.credential_required else "optional"
            out += [f"Connection: `{action.credential}` ({need}).", ""]
        out += [_field_line(f) for f in action.fields] + [""]
    out += ["# Connection types", ""]
    for ctype in sorted(CREDENTIALS.values(), key=lambda c: c.key):
        out += [f"## {ctype.label} (`{ctype.key}`)", "", ctype.description, ""]
        if ctype.test is not None:
            why = (ctype.test.__doc__ or "").strip().split("\n\n")[0]
            button = "Send a test message" if ctype.test_posts else "Test the saved connection"
            out += [f"Its page has **{button}**: " + " ".join(why.split()), ""]
        out += [_field_line(f) for f in ctype.fields] + [""]
    return "\n".join(out)
