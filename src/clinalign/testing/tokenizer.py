"""A small byte-level BPE tokenizer trained on a given corpus, saved in transformers format."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

DEFAULT_CORPUS = (
    "a photo of a chest x-ray with cardiomegaly enlarged cardiac silhouette",
    "pleural effusion blunted costophrenic angle meniscus sign fluid",
    "pneumonia consolidation airspace opacity air bronchogram lobe",
    "no finding clear lungs sharp costophrenic angles normal heart size",
    "dermatology photo of a skin lesion nevus melanoma vitiligo erythema target lesion",
    "brown black blue grey red white pink round oval irregular asymmetric border ring centre",
    "small large uniform several colours smooth scaly patch plaque macule papule",
    "histopathology patch of breast tissue fibroadenoma ductal carcinoma lobular stroma glands",
    "fundus photo of the optic disc cup rim vessels peripapillary atrophy glaucoma",
    "left right upper lower arm leg trunk face back chest the and with of in on at is are",
)


def build_word_tokenizer(
    out_dir: str | os.PathLike[str],
    *,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    vocab_size: int = 1000,
    model_max_length: int = 77,
    bos: bool = True,
):
    """Train a byte-level BPE tokenizer on ``corpus`` and save it to ``out_dir``.

    Special tokens: ``<pad>`` (0), ``<unk>`` (1), ``<s>`` (2, BOS), ``</s>`` (3, EOS). EOS is not id 2
    on purpose: transformers' CLIP treats ``eos_token_id == 2`` as a legacy config and pools at the
    highest token id instead of at EOS. Every encoded
    sequence ends with EOS (CLIP-style models pool there); BOS is prepended when ``bos``.
    Returns the loaded ``PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line.lower() for line in corpus]
    tokenizer.train_from_iterator(lines, trainer=trainer)
    single = "<s> $A </s>" if bos else "$A </s>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single,
        special_tokens=[("<s>", tokenizer.token_to_id("<s>")), ("</s>", tokenizer.token_to_id("</s>"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast
