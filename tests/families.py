"""Tokenizer families users bring, built here: no installed package ships their vocabularies and
the Hub cannot be reached, so each vocabulary is trained with the `tokenizers` library on the
shared SQuAD text (a second or two) and wrapped in its transformers class, beside a tiny random
model of the matching architecture.

| family              | tokenizer                                   | offsets / layout                      |
| ------------------- | ------------------------------------------- | ------------------------------------- |
| bert-wordpiece      | the bundled MiniLM WordPiece                | question first, CLS first             |
| roberta-bpe         | byte-level BPE, add_prefix_space=False      | zero-width and space-only tokens      |
| roberta-bpe-prefix  | byte-level BPE, add_prefix_space=True       | a space is added before the text      |
| deberta-v2-unigram  | Unigram with a Metaspace pre-tokenizer       | offsets include the space before words |
| xlnet-left          | Unigram + Metaspace, padding_side="left"    | context first, CLS last               |
| xlm-roberta-unigram | Unigram + Metaspace, RoBERTa's architecture | positions numbered after the pad id   |
| albert-unigram      | Unigram + Metaspace, lower-cased            | offsets into the original-case text   |
| modernbert-bpe      | byte-level BPE in a plain tokenizer.json    | sliding-window layers (packing tests) |
| longformer-bpe      | byte-level BPE, Longformer's architecture   | global attention on the question       |
| longformer-wordpiece| the bundled WordPiece, Longformer's         | two separators, not RoBERTa's three   |
| funnel-wordpiece    | the bundled WordPiece, Funnel's             | logits change with padding (pooling)  |
| fnet-wordpiece      | the bundled WordPiece, FNet's               | logits change with padding (Fourier)  |
"""

from __future__ import annotations

import json
from pathlib import Path

FAMILIES = ("bert-wordpiece", "roberta-bpe", "roberta-bpe-prefix", "deberta-v2-unigram", "xlnet-left",
            "xlm-roberta-unigram", "albert-unigram")

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def squad_text(squad_dir: Path) -> list[str]:
    texts = []
    for name in ("train-v1.1.sample.json", "dev-v2.0.sample.json"):
        for article in json.loads((squad_dir / name).read_text())["data"]:
            for para in article["paragraphs"]:
                texts.append(para["context"])
                texts.extend(qa["question"] for qa in para["qas"])
    return texts


def _bpe_parts(texts: list[str], vocab_size: int = 3000):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def _unigram_vocab(texts: list[str], vocab_size: int = 3000):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    uni = Tokenizer(models.Unigram())
    uni.normalizer = normalizers.NFKC()
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.train_from_iterator(texts, trainers.UnigramTrainer(
        vocab_size=vocab_size, unk_token="<unk>",
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>", "<cls>", "<sep>", "[CLS]", "[SEP]", "[PAD]",
                        "[MASK]", "[UNK]"]))
    return [tuple(v) for v in json.loads(uni.to_str())["model"]["vocab"]]


def build_family(family: str, folder: Path, squad_dir: Path) -> Path:
    """A model folder for `family`: its tokenizer and a tiny random QA model (seeded)."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    if family == "bert-wordpiece":
        from tests.conftest import build_tiny_model

        return build_tiny_model(folder)
    if family in ("funnel-wordpiece", "fnet-wordpiece"):
        from transformers import FNetConfig, FunnelConfig

        from qa_lib.modeling import load_tokenizer

        tokenizer = load_tokenizer("all-MiniLM-L6-v2")
        if family == "funnel-wordpiece":
            config = FunnelConfig(vocab_size=tokenizer.vocab_size, block_sizes=[1, 1], d_model=32, n_head=2, d_head=16,
                                  d_inner=64)
        else:
            config = FNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        AutoModelForQuestionAnswering.from_config(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder
    if family == "longformer-wordpiece":
        # As Longformers trained on a BERT vocabulary are shipped: config.json keeps Longformer's
        # default sep_token_id (2), which is not the tokenizer's [SEP].
        from transformers import LongformerConfig

        from qa_lib.modeling import load_tokenizer

        tokenizer = load_tokenizer("all-MiniLM-L6-v2")
        config = LongformerConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=1026,
                                  attention_window=[16, 16], pad_token_id=tokenizer.pad_token_id, **_TINY)
        torch.manual_seed(0)
        AutoModelForQuestionAnswering.from_config(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder
    texts = squad_text(squad_dir)
    if family.startswith("roberta-bpe"):
        from transformers import RobertaConfig, RobertaTokenizer

        vocab, merges = _bpe_parts(texts)
        tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, add_prefix_space=family.endswith("prefix"))
        config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **_TINY)
    elif family == "longformer-bpe":
        from transformers import LongformerConfig, RobertaTokenizer

        vocab, merges = _bpe_parts(texts)
        tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
        config = LongformerConfig(vocab_size=len(tokenizer), max_position_embeddings=1026, attention_window=[16, 16],
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, sep_token_id=tokenizer.sep_token_id, **_TINY)
    elif family == "deberta-v2-unigram":
        from transformers import DebertaV2Config, DebertaV2Tokenizer

        tokenizer = DebertaV2Tokenizer(vocab=_unigram_vocab(texts))
        config = DebertaV2Config(vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                                 relative_attention=True, position_buckets=64, pos_att_type=["p2c", "c2p"],
                                 position_biased_input=False, **_TINY)
    elif family == "xlnet-left":
        from transformers import XLNetConfig, XLNetTokenizer

        tokenizer = XLNetTokenizer(vocab=_unigram_vocab(texts))
        assert tokenizer.padding_side == "left"
        config = XLNetConfig(vocab_size=len(tokenizer), d_model=32, n_layer=2, n_head=2, d_inner=64,
                             pad_token_id=tokenizer.pad_token_id)
    elif family == "xlm-roberta-unigram":
        from transformers import XLMRobertaConfig, XLMRobertaTokenizer

        tokenizer = XLMRobertaTokenizer(vocab=_unigram_vocab(texts))
        config = XLMRobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=514,
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **_TINY)
    elif family == "albert-unigram":
        from transformers import AlbertConfig, AlbertTokenizer

        tokenizer = AlbertTokenizer(vocab=_unigram_vocab(texts))
        assert tokenizer.do_lower_case
        config = AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=512,
                              pad_token_id=tokenizer.pad_token_id, **_TINY)
    elif family == "modernbert-bpe":
        # ModernBERT ships a plain tokenizer.json (PreTrainedTokenizerFast): byte-level BPE with a
        # RoBERTa-style template, no token type ids. Its even layers attend within a sliding window.
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
        from transformers import ModernBertConfig, PreTrainedTokenizerFast

        vocab, merges = _bpe_parts(texts)
        backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> $B </s>",
            special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, cls_token="<s>", sep_token="</s>",
                                            pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                            model_input_names=["input_ids", "attention_mask"])
        config = ModernBertConfig(vocab_size=len(tokenizer), max_position_embeddings=512,
                                  pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                                  sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                                  eos_token_id=tokenizer.sep_token_id, **_TINY)
    else:
        raise ValueError(f"unknown family {family}")
    torch.manual_seed(0)
    AutoModelForQuestionAnswering.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
