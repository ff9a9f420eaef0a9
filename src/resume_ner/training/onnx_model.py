"""A token classifier exported to ONNX (``model.onnx``, ``resume_ner.training.onnx_export``), run by ONNX Runtime
behind the interface of a Hugging Face token classifier: ``model(input_ids=..., attention_mask=...).logits``.

The windows, batching, CRF/Viterbi decoding and span merging around it are the project's own, so a ``Predictor``
or ``evaluate`` over an export directory reads entities exactly as over the checkpoint it came from. The graph
runs in fp32 on the CPU, or on a GPU where ONNX Runtime has the CUDA provider (``onnxruntime-gpu``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.modeling_outputs import TokenClassifierOutput

from resume_ner.errors import CheckpointError, ModelLoadError

LOGITS_OUTPUT = "logits"
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
ONNX_EXTRA = "pip install 'resume-ner[onnx]' (onnx, onnxscript and onnxruntime)"


def session_providers(device: torch.device, available: list[str]) -> list[str]:
    """The ONNX Runtime execution providers for ``device``: CUDA first on a GPU (``CheckpointError`` when this
    ONNX Runtime has none), the CPU otherwise."""
    if device.type != "cuda":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER not in available:
        raise CheckpointError(
            f"the ONNX model was asked to run on {device}, but this onnxruntime has no CUDA provider "
            f"(it has {', '.join(available)}): install onnxruntime-gpu, or run it with --device cpu"
        )
    return [CUDA_PROVIDER, CPU_PROVIDER]


class OnnxTokenClassifier(torch.nn.Module):
    """An ONNX Runtime session over ``model.onnx`` that answers like ``*ForTokenClassification``: the inputs the
    graph declares (``input_ids``, ``attention_mask``, and ``token_type_ids`` for models that take them) in, the
    fp32 ``logits`` (batch, sequence, labels) out, on the device of the input ids."""

    def __init__(self, path: str | Path, device: torch.device) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ModelLoadError(f"{path} is an ONNX model, which needs onnxruntime: {ONNX_EXTRA}") from None

        super().__init__()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same threads as the torch model would use
        options.inter_op_num_threads = 1
        providers = session_providers(device, onnxruntime.get_available_providers())
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own error types for unreadable graphs
            raise CheckpointError(f"{path} cannot be loaded by ONNX Runtime ({exc})") from None
        self.input_names = [node.name for node in self.session.get_inputs()]
        outputs = [node.name for node in self.session.get_outputs()]
        if LOGITS_OUTPUT not in outputs:
            raise CheckpointError(f"{path} has no {LOGITS_OUTPUT!r} output (its outputs: {', '.join(outputs)})")
        self.eval()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> TokenClassifierOutput:
        given = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids),
        }
        unknown = [name for name in self.input_names if name not in given]
        if unknown:
            raise CheckpointError(f"the ONNX model takes inputs this project does not give: {', '.join(unknown)}")
        feed = {name: given[name].detach().cpu().numpy() for name in self.input_names}
        (logits,) = self.session.run([LOGITS_OUTPUT], feed)
        return TokenClassifierOutput(logits=torch.from_numpy(logits).to(input_ids.device))
