"""Exported models, as someone outside the harness uses them.

    loader.py   `load_exported(folder)`: a trained run's RUN/model/ loaded with the transformers
                Auto class its config.json names (`harness_export`), scored as it was trained
                (a bidirectional prefix, UL2's mode token, an encoder-decoder's sentinel), with
                NSP/SOP's pair head and ELECTRA's replaced-token probabilities

Importing this package imports none of them.
"""
