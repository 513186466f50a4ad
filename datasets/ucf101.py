"""UCF101 (Soomro et al., 2012) in CoOp's format: 101 actions, one middle frame per video."""

import os

from lamm_plugin.files import open_text

from .base import (
    DatasetFormatError,
    Split,
    SplitFileDataset,
    camel_to_words,
    make_datum,
    register_dataset,
    split_trainval,
)


@register_dataset
class UCF101(SplitFileDataset):
    """``ucf101/{UCF-101-midframes/<Action_Name>/*.jpg, split_zhou_UCF101.json}``.

    Without the split file, split 01 of ``ucfTrainTestlist/`` is used, its training list split 80/20 into
    train/val. Class names are the CamelCase actions with underscores: ``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``.
    """

    dataset_dir = "ucf101"
    image_subdir = "UCF-101-midframes"

    def make_split(self) -> tuple[Split, Split, Split]:
        path = self.require_for_split(os.path.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt"), "class list")
        cname2lab = {}
        with open_text(path) as f:
            for line in f:
                if line.strip():
                    label, action = line.split()
                    cname2lab[action] = int(label) - 1
        train, val = split_trainval(self.read_list(cname2lab, "trainlist01.txt"))
        return train, val, self.read_list(cname2lab, "testlist01.txt")

    def read_list(self, cname2lab: dict[str, int], filename: str) -> Split:
        """Parse lines ``<Action>/<video>.avi [<label>]``; the image is the video's ``.jpg`` middle frame."""
        path = self.require_for_split(os.path.join(self.dataset_dir, "ucfTrainTestlist", filename), "split list")
        items = []
        with open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                action, video = line.split()[0].split("/")
                if action not in cname2lab:
                    raise DatasetFormatError(f"{path}:{lineno}: action {action!r} is not in classInd.txt")
                classname = camel_to_words(action)
                impath = os.path.join(self.image_dir, classname, video.replace(".avi", ".jpg"))
                items.append(make_datum(impath, cname2lab[action], classname, path))
        return items
