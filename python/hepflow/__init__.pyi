"""Type stubs of the hepflow package (the implementation is in __init__.py and _hepflow_rust)."""

import os
from collections.abc import Mapping
from typing import Any, Literal, Union

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = ["Model", "ModelError", "train", "load", "evaluate", "__version__"]

#: A 2-D array (events x features), a pandas DataFrame, a dict of 1-D arrays (uproot's
#: ``tree.arrays(library="np")``) or the path of an event file.
Events = Union[npt.ArrayLike, "pandas.DataFrame", Mapping[str, npt.ArrayLike], str, os.PathLike[str]]  # noqa: F821
Architecture = Literal[
    "pq-spline", "rq-spline", "realnvp", "glow", "maf", "made-mog", "flow-matching"
]

TRAIN_OPTIONS: dict[str, tuple[str, str]]

class ModelError(Exception):
    """A model directory is damaged: model.json or model.safetensors missing, invalid or mismatched."""

class Model:
    """A trained flow: sample events, evaluate densities, save in the CLI's model format."""

    @property
    def columns(self) -> list[str]: ...
    @property
    def context_columns(self) -> list[str]: ...
    def info(self) -> dict[str, Any]: ...
    def sample(
        self,
        n: int,
        seed: int = 0,
        condition: Any = None,
        *,
        threads: int | None = None,
        progress: bool = True,
        as_frame: bool | None = None,
    ) -> np.ndarray[Any, np.dtype[np.float32]] | "pandas.DataFrame": ...  # noqa: F821
    def log_prob(
        self, events: Events, condition: Any = None, *, threads: int | None = None
    ) -> np.ndarray[Any, np.dtype[np.float64]]: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...

def load(path: str | os.PathLike[str]) -> Model: ...
def train(
    data: Events,
    columns: list[str] | None = None,
    model: Architecture = "made-mog",
    condition: str | list[str] | None = None,
    epochs: int = 200,
    seed: int = 0,
    threads: int | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    *,
    format: str | None = None,
    features: str | None = None,
    select: str | list[str] | None = None,
    weight: str | None = None,
    blocks: int | None = None,
    hidden: list[int] | None = None,
    bins: int | None = None,
    bound: float | None = None,
    residual: bool | None = None,
    dropout: float | None = None,
    ode_steps: int | None = None,
    components: int | None = None,
    activation: Literal["relu", "silu", "tanh"] | None = None,
    time_sampling: Literal["uniform", "logit-normal"] | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    schedule: Literal["cosine", "plateau", "constant"] | None = None,
    patience: int | None = None,
    val_fraction: float | None = None,
    weight_decay: float | None = None,
    clip_grad_norm: float | None = None,
    ema_decay: float | None = None,
    margin: float | None = None,
    ensemble: int | None = None,
) -> Model: ...
def evaluate(
    model: Model,
    reference: Events,
    n: int | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    condition: Any = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]: ...
