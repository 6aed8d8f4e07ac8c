"""Multi-task heads on one shared minilm encoder pass.

Read in this order:
    data.py     readers for TREC, SST-2 and CoNLL-2003, with file:line errors
    ner.py      word <-> sub-token alignment, BIO decoding, overlapping windows for long texts
    metrics.py  accuracy and entity-level micro F1 (strict CoNLL spans)
    model.py    the heads, ScalarMix, MultiTaskModel (one encoder pass feeds every head and gives the
                embedding)
    storage.py  save / load a MultiTaskModel: heads.safetensors, config.json, the backbone's hash
    features.py word shapes (Xx, XX, d, ...) from the original text: the casing the uncased backbone loses
    crf.py      a linear-chain CRF with IOB2 constraints (forward algorithm, Viterbi)
    tasks.py    the three tasks: their splits, tokenized examples, scoring
    freezing.py which parameters train under --freeze, and the frozen bottom's states cached once
    schedule.py task sampling, batches, the optimizer and its schedule, the moving average of the weights
    training.py the training job: build, cache, fit, best-epoch selection, save (TrainConfig, train)
    train.py    python -m heads.train: its options, parsed into a TrainConfig
    predict.py  python -m heads.predict: JSON records with every task's prediction

Nothing is imported here, so `python -m heads.train` and `python -m heads.predict` start clean.
"""
