"""What only the torch runtime of BLIP needs: its dtype, int8 quantisation, a stop on cancel.

Each imports torch when called: the compiled runtime (daemon/captions/openvino_blip.py) never
needs it, and a daemon captioning with it never waits seconds for torch to import.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any


def cpu_has_fast_bfloat16() -> bool:
    """True where bfloat16 matrix products run in hardware (AVX512-BF16, AMX, Arm BF16)."""
    import torch

    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(name, False) for name in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))


def resolve_dtype(setting: str, device: str, quantize: str) -> Any:
    """The torch dtype for `caption.dtype`; auto picks the fastest measured (bench/caption.py).

    CUDA: bfloat16 where supported, else float16. CPU: bfloat16 where the CPU does it in hardware
    (measured here: as fast as dynamic int8, half the memory of fp32, captions closer to fp32),
    else float32; dynamic int8 always computes from float32 weights.
    """
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if quantize == "int8":
        return torch.float32
    return torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every Linear layer (weights int8, activations per batch)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization and quantized tensors are marked deprecated in favour of torchao,
        # yet are what torch 2.13 ships; the warnings say nothing actionable at run time.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def stop_when_set(cancel: threading.Event) -> Any:
    """A stopping criterion for `generate`: every sequence ends once `cancel` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenSet(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopWhenSet()])
