"""schemathesis hooks for bench/schemathesis.sh (loaded through schemathesis.toml).

Some requests are valid by the document's schemas and still refused with 400 for reasons
no schema can state: a deployment's toplevel must already be in the host's store, an
import body must be a zstd `nix-store --export` stream of exactly the listed paths, a
bundle must be signed. schemathesis.toml lets `positive_data_acceptance` take a 400 on
those operations; this check then makes sure that each such 400 is one of those
documented refusals and not a schema the agent does not really accept (a 400 naming a
field the schema allows would be a bug in the document or the agent).
"""

import json
import re

import schemathesis

# A Duration's total must fit 64 bits of milliseconds (its description says so; a pattern
# cannot bound a sum).
TOO_LONG = r"^(confirm_timeout|health\[\d+\][.a-z]*): invalid duration `[^`]*`: the (number|duration) is too large"

# Per operation, the 400 messages a schema-valid request may get (see agent-v1.yaml).
SEMANTIC_REFUSALS = {
    "POST /v1/deployments": [
        TOO_LONG,
        r"^toplevel: \S+ is not in this host's store",
        r"^toplevel: \S+ has no bin/switch-to-configuration",
        r"^health\[\d+\]: `http` health checks run on the controller",
        # OpenAPI 3.0 cannot say "the first item is not empty" (no tuple schemas).
        r"^health\[\d+\]: `command` must be a non-empty list: the program, then its arguments",
        r"^cache: `[^`]*` is not one of this agent's `caches`",
        # What the CacheUrl pattern leaves to its description (CacheUrl's `check`).
        r"^cache: invalid cache URL `.*`: it must not contain whitespace or control characters",
        r"^cache: invalid cache URL `.*`: a file:// cache path must not contain `\.\.`",
        r"^cache: invalid cache URL `.*`: the store parameter `[^`]*` is not allowed here",
        r"^cache: invalid cache URL `.*`: `[^`]*` is not a store parameter name",
    ],
    "POST /v1/paths/import": [
        r"^the import body is not",
        r"^x-hostctl-paths: \S+ is listed twice",
        # The export format and its paths against the header (hostctl_nix::export_stream).
        r"^the import stream ",
        r"^the stream carries ",
        r"^x-hostctl-paths lists \S+, which the stream does not carry",
        r"^\S+ comes before its reference ",
        r"^the stream's paths refer to ",
    ],
    "POST /v1/rollback": [TOO_LONG],
    # The body is an opaque signed file: every malformed one is refused.
    "POST /v1/bundles": [r""],
}


@schemathesis.check
def only_documented_semantic_refusals(ctx, response, case):
    """A schema-valid request refused with 400 must be refused for a documented reason."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    label = f"{case.method.upper()} {case.operation.path}"
    allowed = SEMANTIC_REFUSALS.get(label)
    if allowed is None:
        return None  # positive_data_acceptance already fails it
    try:
        message = json.loads(response.content)["message"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"a 400 without an ApiError body: {response.content[:200]!r}")
    if not any(re.search(pattern, message) for pattern in allowed):
        raise AssertionError(f"schema-valid request refused for an undocumented reason: {message}")
    return None
