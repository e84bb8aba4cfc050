"""Named settings that reproduce README's results table: ``gatedrnn train --preset NAME``;
``gatedrnn presets`` lists them.

Each preset is a partial :class:`gatedrnn.config.TrainConfig`; options given on the command
line override it. A preset's ``data`` is relative to the data directory (:func:`data_dir`):
``--data-dir``, else ``$GATEDRNN_DATA``, else ``../shared/data`` beside the checkout that
holds this package, whatever the current directory (see README, Data).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

DATA_ENV = "GATEDRNN_DATA"
BUILT_IN = {"digits"}  # --data values that name a data set shipped with a package, not a file


def data_dir(given=None) -> Path:
    """Where preset data paths start: ``given`` (``--data-dir``), else ``$GATEDRNN_DATA``, else
    ``../shared/data`` beside the repository root that holds the package."""
    if given:
        return Path(given).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resolve(name: str, directory=None) -> dict:
    """The settings of preset ``name``, its data path joined to :func:`data_dir` (``directory``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    settings = copy.deepcopy(PRESETS[name])
    if settings.get("data") and settings["data"] not in BUILT_IN:
        settings["data"] = str(data_dir(directory) / settings["data"])
    return settings


PRESETS: dict[str, dict] = {
    # long memory
    "adding-200": dict(task="adding", length=200, hidden_size=128, lr=1e-2, steps=4000, stop_when_solved=True),
    # copy at T = 100 to 99% recall: chrono initialization up to T (the GRU: lr 1e-2, 6,800 steps on a
    # GPU check; the LSTM needs --hidden-size 256 --lr 3e-3)
    "copy-100": dict(task="copy", length=100, hidden_size=128, lr=1e-2, chrono=100, steps=12000,
                     stop_when_solved=True, max_minutes=20),
    # Bai et al. 2018's copy memory at T = 1000 (every recurrent row there at the baseline, 0.02): layer norm,
    # chrono initialization up to T and a curriculum on the delay (100, 200, 400, then 1000), the training
    # batches' length growing once the loss is 15% of that length's baseline; validation and test at T = 1000
    "copy-1000": dict(task="copy", length=1000, hidden_size=128, lr=3e-3, chrono=1000, layer_norm=True, steps=20000,
                      eval_every=250, stop_when_solved=True, max_minutes=15,
                      extra={"solved_loss": 0.002, "curriculum": "100,200,400"}),
    # Bai et al. 2018's adding problem at T = 600 (their LSTM failed, 0.164): chrono initialization up
    # to T makes the LSTM and the GRU solve it to MSE < 1e-3 in minutes (--chrono 0 for the RNN row)
    "adding-600": dict(task="adding", length=600, hidden_size=128, lr=1e-2, chrono=600, steps=6000,
                       stop_when_solved=True, max_minutes=20, extra={"solved_mse": 1e-3}),
    # text: beats nanoGPT's 66-second CPU baseline (validation loss 1.886) on tiny Shakespeare
    "shakespeare-quick": dict(task="text", data="tinyshakespeare.txt", hidden_size=256, batch_size=32,
                              lr=4e-3, steps=1000, eval_every=1000, extra={"level": "char", "bptt": 64}),
    # text: the 30-minute budget
    "shakespeare": dict(task="text", data="tinyshakespeare.txt", hidden_size=512, batch_size=32, lr=3e-3,
                        steps=6000, eval_every=500, dropout=0.1, schedule="cosine", patience=4, max_minutes=28,
                        extra={"level": "char", "bptt": 100}),
    # Zaremba et al. 2014, small: 2 x 200 LSTM (13 epochs of plain SGD there). Here Adam with a cosine
    # schedule and dropout 0.3; an adaptive softmax (2,000 frequent words in the head) makes a step 2.2x
    # cheaper on a CPU, so ~20 epochs at 20 x 35 fit 30 minutes on 2 cores
    "ptb-small": dict(task="text", data="ptb", hidden_size=200, layers=2, batch_size=20, lr=3e-3,
                      steps=26_000, eval_every=2000, dropout=0.3, adaptive_softmax=[2000], schedule="cosine",
                      patience=3, max_minutes=29, extra={"level": "word", "bptt": 35}),
    # the same with a full softmax tied to the embedding (Press & Wolf 2017): ~9 epochs in 30 minutes
    "ptb-small-tied": dict(task="text", data="ptb", hidden_size=200, layers=2, batch_size=20, lr=3e-3,
                           steps=11_000, eval_every=1000, dropout=0.25, tie_weights=True, schedule="cosine",
                           patience=3, max_minutes=29, extra={"level": "word", "bptt": 35}),
    # Zaremba et al. 2014, medium: 2 x 650, dropout 0.5, 39 epochs (hours on a CPU)
    "ptb-medium": dict(task="text", data="ptb", hidden_size=650, layers=2, batch_size=20, lr=1e-3,
                       steps=90_000, eval_every=5000, clip=5.0, dropout=0.5, schedule="cosine",
                       extra={"level": "word", "bptt": 35}),
    # music: next-step NLL on JSB Chorales
    # (chosen on validation NLL among the settings README lists; JSB has only 13.8k training frames)
    "jsb": dict(task="music", data="music/JSB_Chorales.mat", hidden_size=128, batch_size=16, lr=3e-3,
                steps=3000, eval_every=250, dropout=0.2, schedule="cosine", patience=4, extra={"crop": 100}),
    # the layer-norm GRU (or LSTM) on JSB: the GRU's best setting on validation (benchmarks/music_gru.py)
    "jsb-ln": dict(task="music", data="music/JSB_Chorales.mat", hidden_size=128, batch_size=16, lr=3e-3,
                   steps=3000, eval_every=250, dropout=0.2, schedule="cosine", patience=4, layer_norm=True,
                   extra={"crop": 100}),
    # the other three sets are larger (training frames: JSB 13.8k, Nottingham 177k, MuseData 245k, Piano-midi
    # 76k): 1,500 steps underfit them, so these train 4x longer with a cosine schedule
    "nottingham": dict(task="music", data="music/Nottingham.mat", hidden_size=256, batch_size=16, lr=3e-3,
                       steps=6000, eval_every=500, dropout=0.2, schedule="cosine", patience=4, extra={"crop": 100}),
    # the GRU's Nottingham setting, chosen on validation (benchmarks/music_gru.py --preset nottingham): layer
    # norm lifts it off the plateau the plain GRU stalls on, recurrent dropout stops its overfitting
    "nottingham-ln": dict(task="music", data="music/Nottingham.mat", hidden_size=256, batch_size=16, lr=3e-3,
                          steps=6000, eval_every=500, dropout=0.2, schedule="cosine", patience=4, layer_norm=True,
                          recurrent_dropout=0.25, extra={"crop": 100}),
    "musedata": dict(task="music", data="music/MuseData.mat", hidden_size=256, batch_size=16, lr=3e-3,
                     steps=6000, eval_every=500, dropout=0.2, schedule="cosine", patience=4, extra={"crop": 100}),
    "piano-midi": dict(task="music", data="music/Piano_midi.mat", hidden_size=256, batch_size=16, lr=3e-3,
                       steps=6000, eval_every=500, dropout=0.2, schedule="cosine", patience=4, extra={"crop": 100}),
    # question answering, bAbI task 1 (set --data to another task's training file for the others)
    "babi-1k": dict(task="qa", data="babi-en10k/qa1_single-supporting-fact_train.txt", hidden_size=64,
                    embedding_size=64, batch_size=32, lr=5e-3, steps=1000, eval_every=100,
                    extra={"protocol": "1k"}),
    "babi-10k": dict(task="qa", data="babi-en10k/qa1_single-supporting-fact_train.txt", hidden_size=64,
                     embedding_size=64, batch_size=32, lr=5e-3, steps=1000, eval_every=250,
                     extra={"protocol": "10k"}),
    # forecasting
    "airline": dict(task="timeseries", data="timeseries/airline.csv", hidden_size=16, batch_size=32,
                    lr=3e-3, steps=800, eval_every=100,
                    extra={"target": "Passengers", "test_size": 48, "window": 24, "season": 12, "log": True,
                           "difference": True}),
    "sunspots": dict(task="timeseries", data="timeseries/sunspots.csv", hidden_size=32, batch_size=32,
                     lr=3e-3, steps=800, eval_every=100,
                     extra={"target": "SUNACTIVITY", "window": 24, "season": 11}),
    # sequence classification: scikit-learn's 8 x 8 digits, rows (8 steps) or pixels (64 steps)
    "digits": dict(task="classify", data="digits", hidden_size=64, lr=3e-3, steps=1500, eval_every=250,
                   extra={"mode": "row"}),
    "digits-pixel": dict(task="classify", data="digits", hidden_size=64, lr=3e-3, steps=1500, eval_every=250,
                         extra={"mode": "pixel"}),
    "digits-permuted": dict(task="classify", data="digits", hidden_size=64, lr=3e-3, steps=1500, eval_every=250,
                            extra={"mode": "pixel", "permute": True}),
    # 5,000 MNIST digits: 28 rows of 28 pixels, or 784 single pixels (Le et al. 2015's sequential MNIST)
    "mnist-rows": dict(task="classify", data="mnist_5k.csv.gz", hidden_size=128, lr=2e-3, steps=1500,
                       eval_every=250, extra={"mode": "row"}),
    "mnist-rows-permuted": dict(task="classify", data="mnist_5k.csv.gz", hidden_size=128, lr=2e-3,
                                steps=1500, eval_every=250, extra={"mode": "row", "permute": True}),
    # pixel by pixel: 784 steps, so batch 32 and 2,000 steps (16 epochs of the 4,000 training images): about
    # 11 minutes for the LSTM on one core (measured), 2 for the RNN
    "mnist-pixel": dict(task="classify", data="mnist_5k.csv.gz", hidden_size=128, batch_size=32, lr=2e-3,
                        steps=2000, eval_every=500, schedule="cosine", extra={"mode": "pixel"}),
    # the 20-minute budget for pixel-by-pixel MNIST: 5,000 steps, cosine (GRU: 91% on a GPU check)
    "mnist-pixel-long": dict(task="classify", data="mnist_5k.csv.gz", hidden_size=128, batch_size=32, lr=2e-3,
                             steps=5000, eval_every=500, schedule="cosine", max_minutes=20, extra={"mode": "pixel"}),
    "mnist-pixel-permuted": dict(task="classify", data="mnist_5k.csv.gz", hidden_size=128, batch_size=32,
                                 lr=2e-3, steps=2000, eval_every=500, schedule="cosine",
                                 extra={"mode": "pixel", "permute": True}),
    # video: next-frame prediction on moving digits (10 -> 10 frames of 64 x 64, 4 x 4 patches), with
    # --cell convlstm or convgru (lstm / gru: the FC-LSTM comparison on flattened frames). Quick: about
    # 3 minutes on 2 cores (convlstm: 0.36 s a step, measured)
    "video-quick": dict(task="video", data="mnist_5k.csv.gz", hidden_size=32, layers=2, batch_size=16,
                        lr=3e-3, steps=360, eval_every=120, max_minutes=2.6,
                        extra={"kernel_size": 3, "patch": 4, "valid_size": 128, "test_size": 256}),
    # the 30-minute budget: 2 layers of 64 channels, 3 x 3 kernels (convlstm: 1.1 s a step, measured)
    "video": dict(task="video", data="mnist_5k.csv.gz", hidden_size=64, layers=2, batch_size=16, lr=2e-3,
                  steps=1500, eval_every=250, schedule="cosine", max_minutes=28,
                  extra={"kernel_size": 3, "patch": 4, "valid_size": 256, "test_size": 512}),
    # where each xLSTM cell shines (benchmarks/xlstm_tasks.py): parity, trained on 1 to 40 bits and tested on 40 to
    # 256 (Deletang et al. 2023; xLSTM Figure 4): the RNN, LSTM, GRU and sLSTM solve it within 750 steps, the mLSTM
    # and MinGRU stay at chance (measured, 3 seeds)
    "parity": dict(task="parity", length=40, hidden_size=64, batch_size=128, lr=3e-3, steps=2000, eval_every=250,
                   stop_when_solved=True),
    # multi-query associative recall (Arora et al. 2023; xLSTM Figure 5), each step showing the token before it
    # beside its own: 4 pairs in 32 tokens, and 16 pairs in 64
    "mqar-4": dict(task="mqar", length=32, hidden_size=64, batch_size=64, lr=3e-3, steps=1500, eval_every=250,
                   stop_when_solved=True, extra={"kv_pairs": 4, "vocab": 64}),
    "mqar-16": dict(task="mqar", length=64, hidden_size=64, batch_size=64, lr=3e-3, steps=1500, eval_every=250,
                    stop_when_solved=True, extra={"kv_pairs": 16, "vocab": 64}),
    # gatedrnn demo: the RNN fails the adding problem at T = 150, the gated cells solve it within 2,000
    # steps at this learning rate (measured; see README)
    "demo": dict(task="adding", length=150, hidden_size=64, lr=1e-2, batch_size=64, steps=2000, eval_every=100),
}

ABOUT: dict[str, str] = {  # one line each, for ``gatedrnn presets``
    "adding-200": "adding problem at T = 200, until solved (Le et al. 2015's benchmark)",
    "copy-100": "copy task with a 100-step delay, until 99% recall, chrono initialization (Arjovsky et al. 2016)",
    "copy-1000": "copy task with a 1,000-step delay (Bai et al. 2018), layer norm, chrono, a curriculum on the delay",
    "adding-600": "adding problem at T = 600 to MSE < 1e-3, chrono initialization (Bai et al. 2018's length)",
    "shakespeare-quick": "tiny Shakespeare, characters: ~1 minute, beats nanoGPT's CPU quick start",
    "shakespeare": "tiny Shakespeare, characters: the 30-minute budget",
    "ptb-small": "Penn Treebank words, 2 x 200, adaptive softmax: 30 minutes",
    "ptb-small-tied": "Penn Treebank words, 2 x 200, tied full softmax: 30 minutes",
    "ptb-medium": "Penn Treebank words, 2 x 650 (Zaremba et al. medium): hours on a CPU",
    "jsb": "JSB Chorales piano rolls, next-step NLL",
    "jsb-ln": "JSB Chorales with the layer-norm cell: the GRU's preset (--cell gru)",
    "nottingham": "Nottingham folk tunes piano rolls, next-step NLL",
    "nottingham-ln": "Nottingham with layer norm and recurrent dropout 0.25: the GRU's preset (--cell gru)",
    "musedata": "MuseData piano rolls, next-step NLL",
    "piano-midi": "Piano-midi.de piano rolls, next-step NLL",
    "babi-1k": "bAbI question answering task 1, 1,000 training questions",
    "babi-10k": "bAbI question answering task 1, 10,000 training questions",
    "airline": "monthly airline passengers 1949-1960: forecast the next month",
    "sunspots": "yearly sunspot activity 1700-2008: forecast the next year",
    "digits": "scikit-learn's 8 x 8 digits read row by row (8 steps)",
    "digits-pixel": "scikit-learn's 8 x 8 digits read pixel by pixel (64 steps)",
    "digits-permuted": "8 x 8 digits, pixels in a fixed random order (64 steps)",
    "mnist-rows": "5,000 MNIST digits read row by row (28 steps)",
    "mnist-rows-permuted": "5,000 MNIST digits, pixels shuffled once, read 28 at a time (28 steps)",
    "mnist-pixel": "5,000 MNIST digits pixel by pixel (784 steps: sequential MNIST)",
    "mnist-pixel-long": "5,000 MNIST digits pixel by pixel, the 20-minute budget",
    "mnist-pixel-permuted": "5,000 MNIST digits, pixels in a fixed random order (784 steps)",
    "video-quick": "moving digits, next 10 frames from 10: ~3 minutes (--cell convlstm)",
    "video": "moving digits, next 10 frames from 10: the 30-minute budget (--cell convlstm)",
    "parity": "parity of bit strings: train on 1-40 bits, test on 40-256 (length generalization; --cell slstm)",
    "mqar-4": "multi-query associative recall, 4 key-value pairs in 32 tokens (--cell mlstm)",
    "mqar-16": "multi-query associative recall, 16 key-value pairs in 64 tokens (--cell mlstm)",
    "demo": "what gatedrnn demo trains: the adding problem at T = 150, where the vanilla RNN fails (~3 minutes)",
}
