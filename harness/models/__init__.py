"""The models every objective trains, and the tensor helpers around them.

    sizes     named widths and depths (pydantic only: the suite schema reads them without torch)
    families  the decoder, encoder and encoder-decoder families, built from scratch at a size
    encdec    the ModernBERT encoder-decoder (registers with transformers' Auto classes on import;
              saved with its own code, so that it loads where this project is absent)
    tensors   IGNORE_INDEX, pad_right, shift_right: helpers shared by objectives, evaluation and
              fine-tuning

Importing this package imports none of them, so it stays free of torch and transformers.
"""
