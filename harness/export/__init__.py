"""Models leaving the harness: each run's model folder as something others can load and read.

    card.py       the model card, RUN/model/README.md (Hugging Face's format), rewritten with the report
    card_body.py  the card's markdown body
    share.py      `harness export RUN_DIR --out DIR [--push REPO_ID]`: the folder copied, and uploaded
"""
