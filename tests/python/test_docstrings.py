"""Every public name of asymvalley (``asymvalley.__all__``, ``asymvalley.lightning.__all__`` and
``asymvalley.valley.__all__``) has a
PyTorch-style docstring and type hints, and every ``Example:`` block in them runs.

Checked for each name, and for each public method a class defines itself:

- a docstring; an ``Args:`` section when it takes arguments (a class: its ``__init__``'s), a
  ``Returns:`` section when it is annotated to return something, an ``Example:`` for every name;
- an annotation on every argument and on the return value (``__init__``: arguments only);
- every ``Example:`` block runs in a fresh namespace from a temp folder: a ``>>>`` block as a
  doctest (its shown outputs must match), a plain block with ``exec``.
"""
import doctest
import inspect
import re
import textwrap

import pytest

import asymvalley

lightning = pytest.importorskip("asymvalley.lightning")

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = (
    [(asymvalley, n) for n in asymvalley.__all__]
    + [(lightning, n) for n in lightning.__all__]
    + [(asymvalley.valley, n) for n in asymvalley.valley.__all__]
)


def _own_methods(cls):
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if isinstance(fn, property):  # a property: a docstring and a type hint, no sections
            yield f"{cls.__name__}.{name}", fn.fget, True
        elif inspect.isfunction(fn):
            yield f"{cls.__name__}.{name}", fn, False


def _params(fn):
    sig = inspect.signature(fn)
    return [p for p in sig.parameters.values() if p.name not in ("self", "cls")], sig


def _check_callable(label, fn, doc, need_example, is_property=False):
    problems = []
    params, sig = _params(fn)
    if not doc:
        return [f"{label}: no docstring"]
    if params and "Args:" not in doc:
        problems.append(f"{label}: no Args: section")
    for p in params:
        if p.annotation is inspect.Parameter.empty:
            problems.append(f"{label}: argument {p.name!r} has no type hint")
    if fn.__name__ != "__init__":
        ret = sig.return_annotation
        if ret is inspect.Signature.empty:
            problems.append(f"{label}: no return type hint")
        elif ret not in (None, "None") and not is_property and "Returns:" not in doc and "Yields:" not in doc:
            problems.append(f"{label}: returns {ret} but has no Returns: section")
    if need_example and "Example:" not in doc:
        problems.append(f"{label}: no Example: section")
    return problems


def _targets():
    for module, name in NAMES:
        obj = getattr(module, name)
        if inspect.isclass(obj):
            init = obj.__init__ if "__init__" in vars(obj) else None
            yield f"{module.__name__}.{name}", obj, init, "top"
            for label, fn, is_property in _own_methods(obj):
                yield f"{module.__name__}.{label}", fn, fn, "property" if is_property else "method"
        else:
            yield f"{module.__name__}.{name}", obj, obj, "top"


TARGETS = list(_targets())


@pytest.mark.parametrize("label,obj,fn,kind", TARGETS, ids=[t[0] for t in TARGETS])
def test_docstring_and_type_hints(label, obj, fn, kind):
    doc = inspect.getdoc(obj) or ""
    if fn is None:  # a class without its own __init__ (an exception): the docstring and example
        problems = [] if doc else [f"{label}: no docstring"]
        if "Example:" not in doc:
            problems.append(f"{label}: no Example: section")
    else:
        problems = _check_callable(label, fn, doc, need_example=kind == "top", is_property=kind == "property")
    assert not problems, "\n".join(problems)


def _examples(doc):
    """The indented blocks after each ``Example:`` / ``Example::`` line."""
    lines = doc.splitlines()
    out = []
    for i, line in enumerate(lines):
        if re.match(r"\s*Examples?::?\s*$", line):
            block = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and not nxt.startswith((" ", "\t")) and block:
                    break
                if nxt.strip() and not nxt.startswith((" ", "\t")):
                    break
                block.append(nxt)
            out.append(textwrap.dedent("\n".join(block)).strip("\n"))
    return [b for b in out if b.strip()]


EXAMPLES = [(label, i, block) for label, obj, _, _ in TARGETS
            for i, block in enumerate(_examples(inspect.getdoc(obj) or ""))]


@pytest.mark.parametrize("label,i,block", EXAMPLES, ids=[f"{e[0]}#{e[1]}" for e in EXAMPLES])
def test_example_runs(label, i, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if ">>>" in block:
        test = doctest.DocTestParser().get_doctest(block, {}, label, None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        out = []
        runner.run(test, out=out.append)
        assert runner.failures == 0, "".join(out)
    else:
        exec(compile(block, f"<{label} example>", "exec"), {})


def test_every_top_level_name_has_an_example_that_ran():
    with_examples = {label for label, _, _ in EXAMPLES}
    missing = [label for label, _, _, kind in TARGETS if kind == "top" and label not in with_examples]
    assert not missing, missing
