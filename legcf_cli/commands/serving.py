"""Using a trained model: ``recommend`` from an exported file (exact or compact) or a run directory,
``fold-in`` of new users, and ``serve`` over HTTP (the optional ``serve`` extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from legcf_cli.options import (
    HostOpt,
    ItemsOpt,
    JsonOpt,
    ModelFileArg,
    PortOpt,
    TopKOpt,
    UserOpt,
    UsersFileOpt,
)
from legcf_cli.output import show
from legcf_cli.reporting import Settings
from legcf_core.errors import ConfigError, LegcfError


def read_user_file(path: Path) -> list[str]:
    """One user id a line (integers or text, as the dataset's ids are); blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise ConfigError("users", f"file {path} cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError("users", f"file {path} is not UTF-8 text") from None
    return [line.strip() for line in lines if line.strip()]


def recommend(
    model: ModelFileArg,
    user: UserOpt = None,
    users: UsersFileOpt = None,
    items: ItemsOpt = None,
    k: TopKOpt = 20,
    as_json: JsonOpt = False,
) -> None:
    """Top-K items for known users (--user, --users) or for a new user from their items (--items).

    Ids are the dataset's own; items a user already had are left out."""
    asked = list(user or []) + (read_user_file(users) if users is not None else [])
    if not asked and items is None:
        raise typer.BadParameter("name users with --user or --users, or a new user's items with --items")
    import legcf_core
    from legcf_core.runtime import keep_freed_memory

    keep_freed_memory()
    from legcf_core.tokens import is_tokens, typed

    served = legcf_core.load(model)
    answers = []
    if asked:
        asked = typed(asked, is_tokens(served.user_ids))  # JSON shows integer ids as numbers
        top, scores = served.recommend(asked, k=k)
        answers += [(u, t, s) for u, t, s in zip(asked, top, scores, strict=True)]
    if items is not None:
        wanted = [part.strip() for part in items.split(",") if part.strip()]
        top, scores = served.recommend_for_items(wanted, k=k)
        answers.append(("new", top, scores))
    for who, top, scores in answers:
        if as_json:
            typer.echo(
                json.dumps(
                    {"user": who, "items": top.tolist(), "scores": [round(float(v), 6) for v in scores]}
                )
            )
        else:
            typer.echo(
                f"{who}\t" + " ".join(f"{i}:{v:.4f}" for i, v in zip(top.tolist(), scores, strict=True))
            )


def fold_in(
    model: Annotated[Path, typer.Argument(help="A compact model file (legcf export --compact).")],
    interactions: Annotated[
        Path, typer.Argument(help="New user,item pairs: a CSV/TSV or LightGCN text file.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The compact model file to write.")],
    as_json: JsonOpt = False,
) -> None:
    """Add new users, and the new items they bring, to a compact model without training."""
    from legcf_core.stages.fold_in import fold_in as run_fold_in

    show("folded in", run_fold_in(model, interactions, output), as_json)


def serve(
    ctx: typer.Context,
    model: ModelFileArg,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
) -> None:
    """Serve top-K recommendations over HTTP: GET /recommend?user=ID&k=20, POST /recommend
    with {"items": [...], "k": 20} for a new user, GET /health.

    Needs the serve extra: pip install 'legcf\\[serve]'. The model is loaded once, before
    the server listens. Requests are logged with -v; Ctrl-C stops the server."""
    try:
        import uvicorn

        from legcf_cli.serve import create_app, model_info
    except ImportError as exc:
        missing = exc.name or "fastapi or uvicorn"
        raise LegcfError(
            f"legcf serve needs the serve extra ({missing} is not installed): pip install 'legcf[serve]'"
        ) from None
    import legcf_core
    from legcf_core.runtime import keep_freed_memory

    keep_freed_memory()
    served = legcf_core.load(model)
    info = model_info(model, served)
    settings = ctx.find_object(Settings) or Settings()
    if not settings.quiet:
        typer.echo(
            f"serving {model} ({info.form}, {info.embedding}: {info.users:,} users, {info.items:,} items)"
            f" on http://{host}:{port}",
            err=True,
        )
    level = "debug" if settings.verbose else "warning" if settings.quiet else "info"
    uvicorn.run(create_app(served, info), host=host, port=port, log_level=level, access_log=settings.verbose)
