"""The call signature the sequence-model probes accept, its check, and a batched, jitted reader of
last-token representations over many sequence lengths.

A probed model is any `eqx.Module` with

    model.embed(tokens [T] int)          -> embeddings [T, d]
    model(tokens [T] int | emb [T, d])   -> (hidden [L, T', d'], output [T', K])   (a 2-tuple or NamedTuple)

and optionally `model.causal = True`, which promises that position t depends on positions <= t only
(then sequences may be right-padded and a sequence that is a prefix of another is read from it), and
`model.tree_attention = True`, which promises `model(tokens [T], positions=[T] int, mask=[T, T] bool)`
(explicit position ids; query i attends key j where mask[i, j]): then all sequences run as one prefix
tree (a trie: every shared prefix once, each node attending to its ancestors) in one row.
The probes read position -1 of hidden: the last token of a decoder, the last latent of a Perceiver.
`rillet.learners.networks.transformer.DecoderTransformer` is the reference implementation.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.errors import SignatureError

__all__ = ["ModelInfo", "check_sequence_model", "plan_rows", "plan_tree", "last_states", "SIGNATURE"]

SIGNATURE = ("an equinox Module with embed(tokens [T] int) -> [T, d] and __call__(tokens [T] int or embeddings "
             "[T, d]) -> (hidden [L, T, d], output [T, K]); see rillet.learners.networks.transformer")


class ModelInfo(NamedTuple):
    num_layers: int
    d_model: int
    num_outputs: int
    causal: bool


def _refuse(model, what: str, cause: Exception | None = None):
    raise SignatureError(f"{type(model).__name__} cannot be probed: {what}. The probes take {SIGNATURE}.") from cause


def check_sequence_model(model) -> ModelInfo:
    """Checks the documented signature with abstract shapes (no compute); SignatureError otherwise."""
    if not isinstance(model, eqx.Module):
        _refuse(model, "it is not an eqx.Module")
    if not callable(getattr(model, "embed", None)):
        _refuse(model, "it has no embed(tokens) method")
    tokens = jax.ShapeDtypeStruct((4,), jnp.int32)
    try:
        emb = jax.eval_shape(model.embed, tokens)
    except Exception as e:  # noqa: BLE001  (any failure means the signature does not fit)
        _refuse(model, f"embed(int32 [4]) failed ({type(e).__name__}: {e})", e)
    if getattr(emb, "ndim", 0) != 2 or emb.shape[0] != 4 or not jnp.issubdtype(emb.dtype, jnp.floating):
        _refuse(model, f"embed(int32 [4]) gave {getattr(emb, 'shape', emb)}, not float [4, d]")
    for name, arg in (("tokens", tokens), ("embeddings", emb)):
        try:
            out = jax.eval_shape(model, arg)
        except Exception as e:  # noqa: BLE001
            _refuse(model, f"model({name}) failed ({type(e).__name__}: {e})", e)
        if not isinstance(out, tuple) or len(out) != 2:
            _refuse(model, f"model({name}) returned {type(out).__name__}, not a (hidden, output) pair")
        hidden, output = out
        if getattr(hidden, "ndim", 0) != 3 or getattr(output, "ndim", 0) != 2:
            _refuse(model, f"model({name}) gave hidden {getattr(hidden, 'shape', None)} and output "
                           f"{getattr(output, 'shape', None)}, not [L, T, d] and [T, K]")
    return ModelInfo(hidden.shape[0], hidden.shape[2], output.shape[1], bool(getattr(model, "causal", False)))


def _width(n: int, causal: bool) -> int:
    return max(8, 1 << (n - 1).bit_length()) if causal else n


def plan_rows(sequences: Sequence[np.ndarray], causal: bool) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Rows to run and, per sequence, (row, position to read). Causal models read a sequence at its last
    token from any row it is a prefix of; other models share identical rows only and are read at -1."""
    rows, reads = [], [(0, 0)] * len(sequences)
    for s in sorted(range(len(sequences)), key=lambda i: -len(sequences[i])):
        x = np.asarray(sequences[s])
        for r, row in enumerate(rows):
            if (len(row) == len(x) or (causal and len(row) > len(x))) and np.array_equal(row[:len(x)], x):
                reads[s] = (r, len(x) - 1 if causal else -1)
                break
        else:
            rows.append(x)
            reads[s] = (len(rows) - 1, len(x) - 1 if causal else -1)
    return rows, reads


def plan_tree(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """The sequences as one prefix tree in depth-first preorder: (tokens [N], positions [N] (depth),
    parent [N] (-1 at roots), reads: per sequence, the node of its last token). Parents precede their
    children and every subtree is a contiguous range of nodes (what `subtree_end` relies on)."""
    children: list[dict] = [{}]  # trie node 0 is a sentinel above the roots
    token, last = [0], []
    for seq in sequences:
        node = 0
        for tok in np.asarray(seq).tolist():
            nxt = children[node].get(tok)
            if nxt is None:
                nxt = children[node][tok] = len(children)
                children.append({}), token.append(tok)
            node = nxt
        last.append(node)
    new = [-1] * len(children)
    tokens, positions, parent = [], [], []
    stack = [(c, 0, -1) for c in reversed(list(children[0].values()))]
    while stack:
        node, depth, up = stack.pop()
        new[node] = len(tokens)
        tokens.append(token[node]), positions.append(depth), parent.append(up)
        stack.extend((c, depth + 1, new[node]) for c in reversed(list(children[node].values())))
    return (np.asarray(tokens, np.int32), np.asarray(positions, np.int32), np.asarray(parent, np.int64),
            [new[n] for n in last])


def subtree_end(parent: np.ndarray, width: int) -> np.ndarray:
    """int32 [W]: one past the last node of each node's subtree (nodes in preorder, as plan_tree gives
    them), so node i descends from node j exactly when j <= i < end[j]; padding nodes (>= len(parent))
    get end = i + 1 (a subtree of their own)."""
    end = np.arange(1, width + 1, dtype=np.int32)
    for i in range(len(parent) - 1, -1, -1):  # children come after parents: finish them first
        p = parent[i]
        if p >= 0 and end[i] > end[p]:
            end[p] = end[i]
    return end


def interval_mask(end: jax.Array) -> jax.Array:
    """bool [W, W] from subtree ends [W]: query i attends key j when j <= i < end[j] (itself and its
    ancestors). Built from two [W] vectors (inside the jitted call: no [W, W] array on the host)."""
    i = jnp.arange(end.shape[0])
    return (i[None, :] <= i[:, None]) & (i[:, None] < end[None, :])


def tree_mask(parent: np.ndarray, width: int) -> np.ndarray:
    """bool [W, W]: node i attends to itself and its ancestors; padding nodes (>= len(parent)) to themselves."""
    return np.asarray(interval_mask(jnp.asarray(subtree_end(parent, width))))


@eqx.filter_jit
def _run_tree(model, tokens: jax.Array, positions: jax.Array, end: jax.Array):
    hidden, output = model(tokens, positions=positions, mask=interval_mask(end))
    return hidden.astype(jnp.float32), output.astype(jnp.float32)


def _tree_states(model, tokens, positions, parent, reads, granule: int = 64) -> tuple[np.ndarray, np.ndarray]:
    width = -(-len(tokens) // granule) * granule
    pad = width - len(tokens)
    hidden, output = _run_tree(model, jnp.asarray(np.pad(tokens, (0, pad))), jnp.asarray(np.pad(positions, (0, pad))),
                               jnp.asarray(subtree_end(parent, width)))
    return np.asarray(hidden)[:, reads].transpose(1, 0, 2), np.asarray(output)[reads]


@eqx.filter_jit
def _run_rows(model, rows: jax.Array):
    """rows [R, W] int32 -> (hidden [R, L, W, d] float32, output [R, W, K] float32)."""
    hidden, output = jax.vmap(lambda r: tuple(model(r)))(rows)
    return hidden.astype(jnp.float32), output.astype(jnp.float32)


def last_states(model, sequences: Sequence[np.ndarray], causal: bool | None = None,
                chunk_elements: int = 1 << 24, tree: bool = True,
                max_tree_nodes: int = 1 << 13) -> tuple[np.ndarray, np.ndarray]:
    """Last-position states of every sequence: (hidden [S, L, d], output [S, K]) float32 (bf16 values
    are exact in float32). A model with tree_attention (and tree=True) runs all sequences as one prefix
    tree of at most max_tree_nodes nodes, padded to a multiple of 64, in one jitted call. Otherwise rows
    of equal width run as one vmapped, jitted call, in chunks of R rows with R * width^2 <= chunk_elements
    (attention memory); causal models pad rows to a power of 2."""
    causal = bool(getattr(model, "causal", False)) if causal is None else causal
    if causal and tree and getattr(model, "tree_attention", False):
        plan = plan_tree(sequences)
        if len(plan[0]) <= max_tree_nodes:
            return _tree_states(model, *plan)
    rows, reads = plan_rows(sequences, causal)
    results: list = [None] * len(rows)
    by_width: dict[int, list[int]] = {}
    for r, row in enumerate(rows):
        by_width.setdefault(_width(len(row), causal), []).append(r)
    for width, members in by_width.items():
        chunk = max(1, min(len(members), chunk_elements // (width * width)))
        padded = members + members[-1:] * (-len(members) % chunk)
        for start in range(0, len(padded), chunk):
            ids = padded[start:start + chunk]
            batch = np.zeros((chunk, width), np.int32)
            for k, r in enumerate(ids):
                batch[k, :len(rows[r])] = rows[r]
            hidden, output = _run_rows(model, jnp.asarray(batch))
            hidden, output = np.asarray(hidden), np.asarray(output)
            for k, r in enumerate(ids):
                results[r] = (hidden[k], output[k])
    hidden = np.stack([results[r][0][:, p] for r, p in reads])
    output = np.stack([results[r][1][p] for r, p in reads])
    return hidden, output
