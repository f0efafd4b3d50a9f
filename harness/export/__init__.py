"""Models leaving the harness: each run's model folder as something others can load and read.

    loader.py     `load_exported(folder)`: a trained run's RUN/model/ loaded with the transformers
                  Auto class its config.json names (`harness_export`), scored as it was trained
                  (a bidirectional prefix, UL2's mode token, an encoder-decoder's sentinel), with
                  NSP/SOP's pair head and ELECTRA's replaced-token probabilities
    card.py       the model card, RUN/model/README.md (Hugging Face's format), rewritten with the report
    card_body.py  the card's markdown body
    share.py      `harness export RUN_DIR --out DIR [--push REPO_ID]`: the folder copied, and uploaded

Importing this package imports none of them.
"""
