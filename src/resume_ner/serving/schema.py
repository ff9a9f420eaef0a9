"""What a served model takes and returns, and its settings: names the pyfunc model and its builder share (no heavy
imports)."""

from typing import Any

TEXT_COLUMN = "text"  # the input: one resume text per row
ENTITIES_COLUMN = "entities"  # the output: per row, a list of entity objects
ENTITY_FIELDS = (("label", "string"), ("start", "long"), ("end", "long"), ("text", "string"), ("score", "double"))
CHECKPOINT_ARTIFACT = "checkpoint"  # the pyfunc artifact key of the Hugging Face checkpoint directory
DEFAULT_MODEL_CONFIG: dict[str, Any] = {  # the model_config a model is saved with; load_model may override it
    "device": "auto",
    "batch_size": 32,
    "precision": "auto",
    "max_text_chars": 1_000_000,
    "max_batch_texts": 16,  # texts of concurrent requests predicted in one call
    "reuse_freed_memory": True,  # raise glibc's malloc thresholds in the serving process (training.allocator)
}
