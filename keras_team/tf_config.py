"""The `TF_CONFIG` of a cluster of workers, without TensorFlow (the command line checks `--workers` before it starts).

`keras_team.distribute` reads it back (`cluster()`) and re-exports
`cluster_config`.

Example:
    >>> cluster_config(["10.0.0.1:2222", "10.0.0.2:2222"], 0)
    '{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 0}}'
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from keras_team.errors import KerasTeamError


def cluster_config(workers: Sequence[str], index: int) -> str:
    """The `TF_CONFIG` value of worker `index` of a cluster of `workers` ("host:port").

    Worker 0 is the chief: it alone writes checkpoints and outputs.

    Example:
        >>> json.loads(cluster_config(["10.0.0.1:2222", "10.0.0.2:2222"], 1))["task"]
        {'type': 'worker', 'index': 1}
        >>> cluster_config(["10.0.0.1"], 0)
        Traceback (most recent call last):
        ...
        keras_team.errors.KerasTeamError: workers='10.0.0.1' is not valid: expected two or more distinct HOST:PORT, comma-separated, the chief first (e.g. 10.0.0.1:2222,10.0.0.2:2222)
    """
    addresses = [re.fullmatch(r"([\w.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", w) for w in workers]
    if len(set(workers)) != len(workers) or len(workers) < 2 or not all(a and 0 < int(a[2]) < 2**16 for a in addresses):
        raise KerasTeamError("workers", ",".join(workers), "two or more distinct HOST:PORT, comma-separated, the chief "
                             "first (e.g. 10.0.0.1:2222,10.0.0.2:2222)")
    if not 0 <= index < len(workers):
        raise KerasTeamError("index", index, f"a worker index in 0..{len(workers) - 1}")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})
