"""``legcf serve``'s HTTP app: a loaded :class:`~legcf_core.recommender.Recommender` behind FastAPI.

- ``GET /health``: ``{"status": "ok", "users", "items", "embedding", "form", "batches",
  "batched_users"}``;
- ``GET /recommend?user=ID&k=20``: a known user's top-k, training items left out;
- ``POST /recommend`` with ``{"items": [...], "k": 20}``: a new user's top-k from
  the items they had (fold-in), those items left out.

Ids are the dataset's own, as ``legcf recommend`` takes and prints them: integers,
or text where the dataset's ids are tokens. Bad
input answers with a JSON ``detail`` and one of two codes:

- 404: an id the model does not know (``detail``: the message naming it);
- 422: a request that is invalid in itself: a missing or non-integer field,
  malformed JSON, an empty item list, k < 1 or k larger than the catalogue
  (``detail``: FastAPI's list of field errors), or any other setting the
  engine refuses (``detail``: its message).

Known-user requests that arrive together are scored as one batch
(:mod:`legcf_cli.batching`); an id is checked before it joins a batch, so a bad
one is refused alone. Fold-in requests are scored one by one on the event loop.
This module imports FastAPI at the top: only ``legcf serve`` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from legcf_cli.batching import UserBatcher
from legcf_core.errors import ConfigError
from legcf_core.tokens import id_key, is_tokens

# The engine's ConfigError fields that mean "this id is not in the model" (404, not 422).
UNKNOWN_ID_FIELDS = frozenset({"user", "item"})


@dataclass(frozen=True)
class ModelInfo:
    """What ``/health`` says of the served model."""

    users: int
    items: int
    embedding: str
    form: str  # "exact" or "compact" (an exported file) or "run" (a run directory)


class Health(BaseModel):
    status: str = "ok"
    users: int
    items: int
    embedding: str
    form: str
    batches: int = Field(description="Batches of known-user requests scored so far.")
    batched_users: int = Field(description="Users scored in them: over batches, the mean batch size.")


class NewUser(BaseModel):
    """A user the model has not seen, given by the items they interacted with."""

    items: list[int | str] = Field(min_length=1, description="Item ids of the dataset the new user had.")
    k: int = Field(20, ge=1, description="Items to recommend (at most the catalogue's size).")


ITEMS = Field(description="Item ids, best first.")
SCORES = Field(description="Their scores h_u . h_i, in the same order.")


class Recommendations(BaseModel):
    items: list[int | str] = ITEMS
    scores: list[float] = SCORES


class UserRecommendations(BaseModel):
    user: int | str
    items: list[int | str] = ITEMS
    scores: list[float] = SCORES


def model_info(path: Path, served: Any) -> ModelInfo:
    """Sizes from the loaded model; layer and form from the file's header (or the run's manifest)."""
    from legcf_core.artifacts import RunDir, read_metadata

    if Path(path).is_dir():
        config = RunDir(Path(path)).load_manifest().get("stages", {}).get("pretrain", {}).get("config", {})
        embedding, form = config.get("embedding", "legcf"), "run"
    else:
        meta = read_metadata(Path(path))
        embedding = meta.get("embedding", "legcf")
        form = "compact" if meta.get("kind") == "compact" else "exact"
    return ModelInfo(served.n_users, served.n_items, embedding, form)


def check_k(k: int, n_items: int, where: tuple[str, ...]) -> None:
    """k above the catalogue is refused as FastAPI refuses a field out of range (422)."""
    if k > n_items:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": where,
                    "msg": f"Input should be less than or equal to {n_items} (the catalogue's size)",
                    "input": k,
                    "ctx": {"le": n_items},
                }
            ]
        )


def checked_ids(values: list[Any], tokens: bool, where: tuple[str | int, ...]) -> list[Any]:
    """Ids as the model keys them; text where the model's ids are integers is refused as FastAPI
    refuses a non-integer field (422). Token ids take any text."""
    keys = [id_key(value, tokens) for value in values]
    bad = [n for n, key in enumerate(keys) if key is None]
    if bad:
        loc = where if len(where) == 2 else (*where, bad[0])
        raise RequestValidationError(
            [
                {
                    "type": "int_parsing",
                    "loc": loc,
                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                    "input": values[bad[0]],
                }
            ]
        )
    return keys


def answer(items: Any, scores: Any) -> dict[str, list]:
    """Arrays from the recommender as JSON lists, scores rounded as ``legcf recommend --json`` does."""
    return {"items": items.tolist(), "scores": [round(float(v), 6) for v in scores]}


async def engine_error(request: Request, exc: Exception) -> JSONResponse:
    """The engine's refusal of an input: 404 for an unknown id, else 422; the message as ``detail``."""
    field = getattr(exc, "field", None)
    return JSONResponse(status_code=404 if field in UNKNOWN_ID_FIELDS else 422, content={"detail": str(exc)})


def create_app(served: Any, info: ModelInfo) -> FastAPI:
    """The HTTP app over ``served``, a model loaded once, before the server starts."""
    app = FastAPI(title="legcf", summary="Top-K recommendations from a legcf model.")
    app.add_exception_handler(ConfigError, engine_error)
    batcher = UserBatcher(served)
    user_tokens, item_tokens = is_tokens(served.user_ids), is_tokens(served.item_ids)

    @app.get("/health")
    async def get_health() -> Health:
        """The server is up; the model it serves, and how its requests were batched."""
        return Health(**info.__dict__, batches=batcher.batches, batched_users=batcher.users)

    @app.get("/recommend")
    async def recommend_user(
        user: Annotated[str, Query(description="A user id of the dataset.")],
        k: Annotated[int, Query(ge=1, description="Items to recommend.")] = 20,
    ) -> UserRecommendations:
        """The k best items for a known user, items they had in training left out."""
        key = checked_ids([user], user_tokens, ("query", "user"))[0]
        check_k(k, served.n_items, ("query", "k"))
        index = served.user_indices([key])[0]
        return UserRecommendations(user=key, **answer(*await batcher.top_items(index, k)))

    @app.post("/recommend")
    async def recommend_new_user(request: NewUser) -> Recommendations:
        """The k best items for a new user from the items they had (fold-in), those left out."""
        items = checked_ids(request.items, item_tokens, ("body", "items"))
        check_k(request.k, served.n_items, ("body", "k"))
        return Recommendations(**answer(*served.recommend_for_items(items, k=request.k)))

    return app
