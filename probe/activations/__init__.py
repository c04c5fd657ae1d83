"""Streaming activation shards: residual-stream vectors per generation row, on disk.

A row is one (item_id, condition) pair; for each hook (TransformerLens names such as
``hook_embed`` or ``blocks.3.hook_resid_post``) it holds the vectors at labelled positions
(the index's ``positions``): the last k prompt tokens aligned from the end (-1 is the last
prompt token), then, in runs with ``--cache-steps``, generated tokens 0, 1, ... (each row's
``n_steps`` says how many are real; the rest are zeros). Rows are buffered and
written ``rows_per_shard`` at a time as ``shard-00000.safetensors`` files, each written
atomically and then listed with its sha256 in ``index.json`` (rewritten atomically). A shard
is therefore either complete and indexed, or unindexed and deleted on resume.

Runs with multi-turn conditions (``review``, ``cot``) keep a second store of the same format
in ``rounds/`` (:data:`~probe.activations.layout.ROUNDS_DIR`): one row per multi-turn row,
with the same hooks at position labels ``0 .. R-2``, label ``r`` being round ``r``'s answer
position (the last prompt token before the model wrote round ``r``'s answer; the final
round's is the main store's -1). Its rows carry ``n_rounds`` (the row's turns) and
``rounds_ran`` (per label, False where that round's prompt was too long to generate from:
its column holds zeros). Runs cached before rounds were stored have no ``rounds/``.

Contract with the generation stage (``generations.jsonl``). Activations sit in memory until
their shard is written, so after a crash generations.jsonl may hold rows whose activations
were lost, and (if the crash fell between a shard write and the row append) a shard may
hold rows that generations.jsonl lacks. On resume the pipeline must therefore decide per key
with both sets, never from generations.jsonl alone::

    done = run.done_keys()                 # rows already in generations.jsonl
    writer = ShardWriter(run.acts_dir, ...)
    have = writer.written_keys()           # activations already in complete shards
    for key in keys:
        need_row = key not in done         # generate and append the row
        need_acts = key not in have        # run the forward pass and writer.add(...)

A key in ``done - have`` needs only its activations recomputed (from the stored prompt);
a key in ``have - done`` needs only its row. :meth:`ShardWriter.add` refuses a key that is
already written, so a resumed run can never store a row's activations twice.
"""

from __future__ import annotations

from probe.activations.layout import (
    DTYPES,
    INDEX,
    SCHEMA_VERSION,
    Key,
    default_positions,
    describe_positions,
    index_positions,
    layer_of,
    shard_name,
)
from probe.activations.store import ActivationStore
from probe.activations.writer import ShardWriter

__all__ = ["DTYPES", "INDEX", "SCHEMA_VERSION", "ActivationStore", "Key", "ShardWriter",
           "default_positions", "describe_positions", "index_positions", "layer_of",
           "shard_name"]
