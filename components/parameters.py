"""KFP parameters generated from the settings classes (`mlm.config`): names, types, defaults and
the descriptions the KFP UI shows.

A KFP component's interface is its Python function's signature, and a lightweight component
ships the function's source to the pod, where KFP's executor reads the annotations again. So a
component whose parameters are settings is written as source here (`define`), from `Parameter`s
built from the config's fields, and compiled with its file name in `linecache` so that
`inspect.getsource` (what KFP reads) finds it. A pipeline's signature is only read in this process
(`inspect.signature`), so `pipeline_function` sets `__signature__` instead.

A KFP parameter cannot be None: a setting whose default is None has the type's empty value as its
default ("", 0, {}, []), which `mlm.config` reads back as None.
"""

from __future__ import annotations

import inspect
import itertools
import linecache
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from mlm.config import Config, Field

# The Python types KFP takes as parameters, as the generated source writes them.
KFP_TYPES = {str: "str", int: "int", float: "float", bool: "bool", dict: "dict", list: "list"}
_counter = itertools.count()
# The names a generated component's annotations use (in the pod, KFP's `from kfp.dsl import *`).
KFP_NAMES = {
    "dsl": dsl, "Input": Input, "Output": Output, "Artifact": Artifact, "Dataset": Dataset,
    "Model": Model, "Metrics": Metrics, "Markdown": Markdown,
    "ClassificationMetrics": ClassificationMetrics,
}  # fmt: skip


@dataclass(frozen=True)
class Parameter:
    """One KFP parameter: its name, Python type, default and description."""

    name: str
    kind: type
    default: Any
    help: str
    setting: str | None = None  # the `mlm.config` setting it sets (None: none)

    @classmethod
    def of(cls, field: Field, name: str | None = None) -> Parameter:
        """The parameter of a setting (named `name`, default: the setting's name)."""
        if field.kind not in KFP_TYPES:
            raise TypeError(f"setting {field.name}: {field.kind} is not a KFP parameter type")
        description = field.help
        choices = field.metadata.get("choices")
        if choices:
            description += f"; one of {', '.join(str(c) for c in choices if c is not None)}"
        return cls(name or field.name, field.kind, field.kfp_default, description, field.name)

    @property
    def source(self) -> str:
        """The parameter as the generated function's source declares it."""
        return f"{self.name}: {KFP_TYPES[self.kind]} = {self.default!r}"

    @property
    def inspect_parameter(self) -> inspect.Parameter:
        return inspect.Parameter(
            self.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=self.default,
            annotation=self.kind,
        )  # fmt: skip


def settings_parameters(
    config_class: type[Config],
    *,
    exclude: Iterable[str] = (),
    names: Mapping[str, str] | None = None,
) -> tuple[Parameter, ...]:
    """The parameters of every optional setting of `config_class` (required ones are a step's
    inputs and outputs, which the component takes as artifacts), in declaration order, but those
    in `exclude`; `names` renames some (setting -> parameter name)."""
    excluded, names = set(exclude), dict(names or {})
    return tuple(
        Parameter.of(field, names.get(field.name))
        for field in config_class.fields()
        if not field.required and field.name not in excluded
    )


def _docstring(summary: str, described: Sequence[tuple[str, str]]) -> str:
    """A Google-style docstring: `summary`, then `Args:` with one entry per (name, text)."""
    lines = [summary.strip(), "", "Args:"]
    # One line an entry: KFP keeps a description's line breaks, and the UI would show them.
    lines += [f"    {name}: {' '.join((text or name).split())}" for name, text in described]
    return "\n".join(lines)


def define(
    name: str,
    *,
    inputs: Mapping[str, str],
    parameters: Sequence[Parameter],
    summary: str,
    module: str,
) -> Callable[..., Any]:
    """A function `name(<inputs>, <parameters>)` written as source, for `dsl.component`. Its
    body hands every argument to `mlm_components.tasks.run_<name>`: it runs in the pod, where
    KFP's executor has prepended `from kfp.dsl import *` and the installed `mlm_components`
    package holds the task.

    Args:
        name: the function's (the component's) name.
        inputs: the leading parameters with their annotations as source (artifacts, required
            parameters, `dsl.TaskConfig`), e.g. {"shards": "Input[Dataset]"}; described by name.
        parameters: the parameters with defaults.
        summary: the docstring's first paragraph.
        module: the module the component is declared in (the function's `__module__`).
    """
    body = (
        "arguments = dict(locals())\n"
        f"from mlm_components.tasks import run_{name}\n\n"
        f"run_{name}(**arguments)"
    )
    doc = _docstring(summary, [*((n, n) for n in inputs), *((p.name, p.help) for p in parameters)])
    doc = doc.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    signature = [f"{key}: {annotation}" for key, annotation in inputs.items()]
    signature += [parameter.source for parameter in parameters]
    source = "\n".join(
        [
            f"def {name}(",
            *(f"    {item}," for item in signature),
            "):",
            textwrap.indent(f'"""{doc}\n"""', "    "),
            textwrap.indent(body.strip(), "    "),
            "",
        ]
    )
    # KFP reads the source back with inspect.getsource, which looks in linecache.
    filename = f"<mlm component {name} {next(_counter)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope = dict(KFP_NAMES)
    # dont_inherit: annotations are objects (not strings, as this module's future import makes them).
    exec(compile(source, filename, "exec", dont_inherit=True), scope)
    function = scope[name]
    function.__module__ = module
    return function


def step_component(
    name: str,
    *,
    inputs: Mapping[str, str],
    parameters: Sequence[Parameter],
    summary: str,
    module: str,
    **options: Any,
) -> Any:
    """The KFP component `name` of a step (`define`), in the project image; `options` are
    further `dsl.component` keywords."""
    from mlm_components import MLM_IMAGE

    function = define(name, inputs=inputs, parameters=parameters, summary=summary, module=module)
    return dsl.component(base_image=MLM_IMAGE, install_kfp_package=False, **options)(function)


def pipeline_function(
    function: Callable[..., Any], parameters: Sequence[Parameter], summary: str
) -> Callable[..., Any]:
    """`function(*values)` given the signature and docstring of `parameters`, for `dsl.pipeline`
    (which calls it with one value per parameter, in order): it receives them as a dict."""
    names = [parameter.name for parameter in parameters]

    def pipeline(*values: Any) -> Any:
        return function(dict(zip(names, values, strict=True)))

    pipeline.__name__ = pipeline.__qualname__ = function.__name__
    pipeline.__signature__ = inspect.Signature([p.inspect_parameter for p in parameters])
    pipeline.__doc__ = _docstring(summary, [(p.name, p.help) for p in parameters])
    return pipeline


@dataclass(frozen=True)
class StepParameters:
    """How a pipeline exposes a component's parameters: each under its own name with `prefix`
    (`names` overrides single ones: a component name -> pipeline name), except `fixed` ones, which
    the pipeline sets itself (artifacts' plumbing, placeholders)."""

    parameters: tuple[Parameter, ...]
    prefix: str = ""
    names: Mapping[str, str] | None = None
    fixed: tuple[str, ...] = ()

    def pipeline_name(self, parameter: Parameter) -> str:
        return (self.names or {}).get(parameter.name, self.prefix + parameter.name)

    def exposed(self) -> tuple[Parameter, ...]:
        """The pipeline parameters: the component's, renamed, but the fixed ones."""
        return tuple(
            Parameter(self.pipeline_name(p), p.kind, p.default, p.help, p.setting)
            for p in self.parameters
            if p.name not in self.fixed
        )

    def arguments(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The component's arguments from the pipeline's parameter values (by pipeline name)."""
        return {
            p.name: values[self.pipeline_name(p)]
            for p in self.parameters
            if p.name not in self.fixed
        }


def merged(*groups: Sequence[Parameter]) -> tuple[Parameter, ...]:
    """The parameters of several steps as one list: a name shared by steps (e.g. `seed`) appears
    once, and must have one type and default."""
    found: dict[str, Parameter] = {}
    for parameter in (p for group in groups for p in group):
        first = found.setdefault(parameter.name, parameter)
        if (first.kind, first.default) != (parameter.kind, parameter.default):
            raise ValueError(
                f"pipeline parameter {parameter.name}: two steps give it different types or "
                f"defaults ({first.default!r}, {parameter.default!r}); rename one"
            )
    return tuple(found.values())
