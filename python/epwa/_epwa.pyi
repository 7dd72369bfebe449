# Type stubs of the extension module (python/src/*.cpp), for editors and type checkers.
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence, Union

import numpy as np
import numpy.typing as npt

TokenIds = Union[Sequence[int], npt.NDArray[np.integer]]

class Error(RuntimeError):
    """Every failure of the library: one line naming the problem, as the CLI prints it."""

class Tokenizer:
    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]: ...
    def decode(self, ids: TokenIds, skip_special: bool = False) -> str: ...
    def decode_continuation(self, ids: TokenIds, skip_special: bool = False) -> str: ...
    def token_to_piece(self, id: int) -> str: ...
    def piece_to_id(self, piece: str) -> int | None: ...
    def is_special(self, id: int) -> bool: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def unk_id(self) -> int: ...
    @property
    def kind(self) -> str: ...

class ModelConfig:
    architecture: str
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    bos_token_id: int
    eos_token_id: int
    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    shared_expert_intermediate_size: int
    norm_topk_prob: bool
    dense_layers: list[int]
    @property
    def moe_layers(self) -> list[int]: ...
    @property
    def num_moe_layers(self) -> int: ...
    @property
    def router_rule(self) -> str: ...
    @property
    def parameter_count(self) -> int: ...

class LayerTrace:
    layer: int
    logits: npt.NDArray[np.float32]  # positions x experts
    topk: npt.NDArray[np.int32]  # positions x k
    weights: npt.NDArray[np.float32]  # positions x k

class Trace:
    tokens: list[int]
    logits: npt.NDArray[np.float32]  # positions x vocabulary
    router: list[LayerTrace]

class Generation:
    prompt_tokens: list[int]
    tokens: list[int]
    text: str | None
    watermark: dict[str, Any]

class WatermarkConfig:
    def __init__(
        self,
        key: str | bytes | None = None,
        *,
        key_file: str | PathLike[str] | None = None,
        keyring: str | PathLike[str] | None = None,
        key_id: str | None = None,
        mode: Literal["gsg", "ewp", "exp"] = "gsg",
        gamma: float = 0.5,
        delta: float = 2.0,
        router_layer: int = -1,
        expert_deltas: Sequence[float] | None = None,
        rotate_keys: bool = False,
        context_buckets: int = 0,
        min_entropy: float = 0.0,
    ) -> None: ...
    @property
    def mode(self) -> str: ...
    @property
    def gamma(self) -> float: ...
    @property
    def delta(self) -> float: ...
    @property
    def router_layer(self) -> int: ...
    @property
    def expert_deltas(self) -> list[float]: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def rotate_keys(self) -> bool: ...
    @property
    def key_ids(self) -> list[str]: ...
    @property
    def context_buckets(self) -> int: ...
    @property
    def min_entropy(self) -> float: ...

class Model:
    def __init__(
        self,
        path: str | PathLike[str] | None = None,
        load: Literal["standard", "fast", "4bit", "8bit", "auto"] | None = "auto",
        threads: int | None = None,
    ) -> None: ...
    @property
    def config(self) -> ModelConfig: ...
    @property
    def router_hash(self) -> str: ...
    @property
    def tokenizer(self) -> Tokenizer | None: ...
    @property
    def path(self) -> Path: ...
    @property
    def format(self) -> str: ...
    @property
    def load_report(self) -> dict[str, Any]: ...
    def trace(self, tokens: TokenIds | str) -> Trace: ...
    def generate(
        self,
        prompt: str | TokenIds,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        watermark: WatermarkConfig | None = None,
        top_k: int = 0,
        allow_special_tokens: bool = False,
        json_schema: dict[str, Any] | bool | None = None,
        min_new_tokens: int = 0,
    ) -> Generation: ...

class TokenDetail:
    position: int
    token: int
    expert: int
    confidence: float
    green: bool
    scored: bool
    stratum: str
    piece: str | None

class DetectionResult:
    # transformers' WatermarkDetector names
    @property
    def num_tokens_scored(self) -> int: ...
    @property
    def num_green_tokens(self) -> int: ...
    @property
    def green_fraction(self) -> float | None: ...
    @property
    def z_score(self) -> float: ...
    @property
    def p_value(self) -> float: ...
    @property
    def prediction(self) -> bool: ...
    # the rest of `epwa detect --json`
    @property
    def method(self) -> str: ...
    @property
    def log10_p(self) -> float: ...
    @property
    def plain_z(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def gamma(self) -> float: ...
    @property
    def candidates(self) -> int: ...
    @property
    def repeats_skipped(self) -> int: ...
    @property
    def strata(self) -> dict[str, tuple[int, int]] | None: ...
    # a config with rotate_keys: the keyring's test
    @property
    def key_id(self) -> str | None: ...
    @property
    def p_corrected(self) -> float | None: ...
    @property
    def keys(self) -> int: ...
    prompt_tokens: int
    text_tokens: int
    router_hash: str
    @property
    def tokens(self) -> list[TokenDetail] | None: ...
    @property
    def experts(self) -> list[int] | None: ...
    def to_dict(self) -> dict[str, Any]: ...

DetectInput = Union[str, TokenIds]

class Detector:
    def __init__(
        self,
        model: Model,
        config: WatermarkConfig,
        method: Literal["full", "cspv", "weighted", "pepi"] = "full",
        oracle: str | PathLike[str] | None = None,
        *,
        threshold: float = 4.0,
        count_repeats: bool = False,
        sample: int | None = None,
    ) -> None: ...
    def detect(
        self, text: DetectInput, prompt: str | TokenIds | None = None, detail: bool = False
    ) -> DetectionResult: ...
    def detect_batch(
        self,
        texts: Iterable[DetectInput | Mapping[str, Any]],
        prompt: str | TokenIds | None = None,
        detail: bool = False,
    ) -> list[DetectionResult]: ...
    @property
    def method(self) -> str: ...
    @property
    def router_layer(self) -> int: ...
    @property
    def threshold(self) -> float: ...
    @property
    def model(self) -> Model: ...
