"""TF Serving's ``models.config``, built with tensorflow-serving-api's protos.

`serving_config` writes a `ModelServerConfig` (text format) listing the
models under an export root, each with a version policy, for
``tensorflow_model_server --model_config_file``.

Example:
    >>> from keras_team.export import saved_model
    >>> version = saved_model(model, tmp, name="digits")
    >>> print(serving_config(tmp, version_policy="latest", num_latest=2).read_text())
    model_config_list {
    ...
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_team.errors import KerasTeamError
from keras_team.files import write_text
from keras_team.export.savedmodel import versions

CONFIG_FILE = "models.config"


def serving_config(
    base_dir: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    version_policy: str | Sequence[int] = "latest",
    num_latest: int = 1,
    mount: str = "/models",
) -> pathlib.Path:
    """Write `base_dir/models.config` for TF Serving's ``--model_config_file``.

    Args:
        base_dir: the export root holding one folder per model.
        names: models to serve; default every folder under `base_dir` with a version.
        version_policy: "latest" (the `num_latest` newest), "all", or a list
            of specific version numbers.
        num_latest: how many versions "latest" serves.
        mount: where `base_dir` is seen by the server (e.g. the container's
            ``-v $PWD/exports:/models``); each base path is `mount/name`.

    Returns:
        The path of the written config.

    Example:
        >>> from keras_team.export import saved_model
        >>> for version in (1, 2):
        ...     path = saved_model(model, tmp, name="digits", version=version)
        >>> serving_config(tmp, version_policy=[1, 2])
        PosixPath('.../models.config')
    """
    base_dir = pathlib.Path(base_dir)
    if names is None:
        names = sorted(p.name for p in base_dir.iterdir() if p.is_dir() and versions(p)) if base_dir.is_dir() else []
    if not names:
        raise KerasTeamError("base_dir", str(base_dir), "a directory holding at least one exported model version")
    config = model_server_config_pb2.ModelServerConfig()
    for name in names:
        present = versions(base_dir / name)
        if not present:
            raise KerasTeamError("names", name, f"a model exported under {base_dir} (no version in {base_dir / name})")
        entry = config.model_config_list.config.add(name=name, base_path=f"{mount.rstrip('/')}/{name}",
                                                    model_platform="tensorflow")
        policy = entry.model_version_policy
        if version_policy == "latest":
            if isinstance(num_latest, bool) or not isinstance(num_latest, int) or num_latest < 1:
                raise KerasTeamError("num_latest", num_latest, "an int >= 1")
            policy.latest.num_versions = num_latest
        elif version_policy == "all":
            policy.all.SetInParent()
        elif isinstance(version_policy, (list, tuple)) and version_policy and set(version_policy) <= set(present):
            policy.specific.versions.extend(int(v) for v in version_policy)
        else:
            raise KerasTeamError("version_policy", version_policy,
                                 f"'latest', 'all' or a list of exported versions of {name!r}: {present}")
    path = base_dir / CONFIG_FILE
    write_text(path, text_format.MessageToString(config))
    return path
