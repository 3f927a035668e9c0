"""`/v1/keys`: a project key mints and revokes the scoped keys of its project, and lists
all of its keys.

A scoped key sees one entity of its project, as if the project held nothing else: what a
SaaS backend hands its customer's browser, for a day. Only a project key (from `infraprism
keys create`) may manage keys; a scoped key gets 403 `forbidden` here. Project keys are made
and revoked by the CLI alone, by whoever runs the deployment: over the API a project key can
list them, not revoke them, so no leaked key can lock the operator out.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from infraprism.api.deps import KeyStoreDep, ProjectKeyDep
from infraprism.api.errors import Conflict, Forbidden, InvalidParameter, NotFound
from infraprism.api.routes import BODY_ERRORS, ERRORS
from infraprism.api.schemas import ErrorEnvelope, KeyCreate, KeysResponse, MintedKey
from infraprism.stores.apikeys import MAX_LIVE_KEYS_PER_PROJECT, ApiKeyError, KeyLimitReached, check_scope

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERRORS)


def _json(body: dict[str, Any], status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": MintedKey, "description": "the new key; its secret is shown this once"},
        **BODY_ERRORS,
        409: {
            "model": ErrorEnvelope,
            "description": f"the project holds {MAX_LIVE_KEYS_PER_PROJECT:,} live keys already",
        },
    },
)
async def mint_key(project_key: ProjectKeyDep, store: KeyStoreDep, body: KeyCreate) -> Response:
    """Mint a key that sees one entity of the project: every analytics endpoint answers it as
    if the project held only that entity's events."""
    try:
        scope = check_scope(body.entity_type, body.entity_id, project_key.project)
        record, secret = await store.mint(project_key.project, scope, body.name, body.expires_in_seconds)
    except KeyLimitReached as exc:
        raise Conflict(str(exc)) from None
    except ApiKeyError as exc:
        raise InvalidParameter(exc.field or "body", str(exc)) from None
    minted = {
        "id": record["id"],
        "key": secret,
        "scope": record["scope"],
        "expires_at": record["expires_at"],
        "name": record["name"],
    }
    return _json(minted, 201)


@router.get("", response_model=None, responses={200: {"model": KeysResponse, "description": "a page of keys"}})
async def list_keys(
    project_key: ProjectKeyDep,
    store: KeyStoreDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size, 1-1000")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="keys to skip, oldest first")] = 0,
) -> Response:
    """The project's keys, oldest first, never their secrets: project keys and scoped ones,
    live, and revoked or expired in the last 30 days."""
    keys, total = await store.project_keys(project_key.project, offset, limit)
    for key in keys:
        del key["project"]
    return _json({"data": keys, "total": total})


@router.delete(
    "/{key_id}",
    status_code=204,
    response_model=None,
    responses={
        204: {"description": "revoked"},
        404: {"model": ErrorEnvelope, "description": "no such key"},
    },
)
async def revoke_key(
    project_key: ProjectKeyDep,
    store: KeyStoreDep,
    key_id: Annotated[str, Path(min_length=1, max_length=64, description="the key's id")],
) -> Response:
    """Revoke a scoped key of the project: its next request gets 401. Revoking twice is fine.
    A project key is revoked with `infraprism keys revoke` (403 `forbidden` here)."""
    revoked = await store.revoke(project_key.project, key_id)
    if revoked is None:
        raise Forbidden(f"{key_id} is a project key: revoke it with `infraprism keys revoke {key_id}`")
    if not revoked:
        raise NotFound(f"no key {key_id!r} in this project")
    return Response(status_code=204)
