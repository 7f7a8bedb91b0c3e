"""Small synthetic CoNLL files for tagging tests, in Chinese and English."""

import random

# Templates of (token, tag) pairs; `{name}`, `{place}` and `{org}` slots are
# filled with entities of several characters or words.
_CHINESE_NAMES = ["张三", "李四", "王五", "赵六"]
_CHINESE_PLACES = ["北京", "上海", "广州"]
_CHINESE_ORGS = ["华为公司", "中国银行", "清华大学"]
_ENGLISH_NAMES = [["John"], ["Mary", "Smith"], ["Li", "Wei"]]
_ENGLISH_ORGS = [["Acme"], ["Globex", "Corp"]]


def _entity(tokens, entity_type):
    return [(token, ("B-" if i == 0 else "I-") + entity_type) for i, token in enumerate(tokens)]


def _outside(tokens):
    return [(token, "O") for token in tokens]


def tagging_sentences(count, seed):
    """Return `count` tagged sentences as lists of `(token, tag)`, half Chinese, half English."""
    generator = random.Random(seed)
    sentences = []
    for index in range(count):
        if index % 2 == 0:
            name = list(generator.choice(_CHINESE_NAMES))
            place = list(generator.choice(_CHINESE_PLACES))
            org = list(generator.choice(_CHINESE_ORGS))
            sentence = (
                _entity(name, "NAME")
                + _outside("在")
                + _entity(place, "LOC")
                + _outside("的")
                + _entity(org, "ORG")
                + _outside("工作。")
            )
        else:
            name = generator.choice(_ENGLISH_NAMES)
            org = generator.choice(_ENGLISH_ORGS)
            sentence = (
                _entity(name, "NAME")
                + _outside(["works", "at"])
                + _entity(org, "ORG")
                + _outside(["."])
            )
        sentences.append(sentence)
    return sentences


def write_conll(path, sentences):
    """Write sentences of `(token, tag)` pairs as a CoNLL file and return its path."""
    with open(path, "w", encoding="utf-8") as file:
        for sentence in sentences:
            file.writelines(f"{token}\t{tag}\n" for token, tag in sentence)
            file.write("\n")
    return str(path)


def write_tagging_files(directory, train_count=48, dev_count=12):
    """Write `train.conll` and `dev.conll` into `directory`; return their paths."""
    train = write_conll(directory / "train.conll", tagging_sentences(train_count, seed=1))
    dev = write_conll(directory / "dev.conll", tagging_sentences(dev_count, seed=2))
    return train, dev
