"""The names of the model shipit serves by default, in a module that imports nothing, so the
command line can name it without loading the engine."""

DEFAULT_MODEL = "smollm2-135m-instruct"
# Other names of the default model: its Hugging Face repository.
DEFAULT_MODEL_NAMES = frozenset({DEFAULT_MODEL, "huggingfacetb/smollm2-135m-instruct"})
