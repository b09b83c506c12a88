"""The command classes every `tnlm` command gets (cli/main.py applies them; command modules write
plain typer): conventional help (`MODEL`, not `{model}`; no type shown for a flag) and Ctrl-C that
ends in `Interrupted` rather than in typer's silent exit."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from tnlm.interrupt import Interrupted


def _conventional(params: list[Any]) -> None:
    for param in params:
        if isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = param.name.upper()
        elif isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # a flag takes no value: show no type


class TnlmCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _conventional(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _conventional([option])
        return option

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise Interrupted() from err


class TnlmGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _conventional(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _conventional([option])
        return option


def _ours(cls: Any, default: type, ours: type) -> Any:
    """`ours` where typer would use its default class; a class a command chose stays."""
    value = getattr(cls, "value", cls)  # typer wraps unset options in a DefaultPlaceholder
    return ours if value in (None, default) else cls


def adopt(group: typer.Typer) -> typer.Typer:
    """Give a command group (and its subgroups) tnlm's command classes."""
    for command in group.registered_commands:
        command.cls = _ours(command.cls, TyperCommand, TnlmCommand)
    for sub in group.registered_groups:
        sub.cls = _ours(sub.cls, TyperGroup, TnlmGroup)
        adopt(sub.typer_instance)
    group.info.cls = _ours(group.info.cls, TyperGroup, TnlmGroup)
    return group
