"""The recipes: which files each dataset needs, where they come from and where they go.

Data only: the steps and the recipe fields are described in :mod:`.steps`. A dataset class reads the folder its
recipe lays out (``tests/test_datasets.py`` holds both to the same folder and config names).
"""

from __future__ import annotations

from .builders import write_cifar100, write_synthetic
from .download import Source
from .steps import Build, Extract, Fetch, Recipe, imagenet_variant, split_recipe

IMAGENET_CLASSNAMES = Source("classnames.txt", drive_id="1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF")

IMAGENET_MANUAL = """\
ImageNet cannot be downloaded automatically (its terms require an account at https://image-net.org).
Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org/download.php and place
the images as
    {folder}/images/train/<wnid>/*.JPEG   (1000 class folders, e.g. n01440764)
    {folder}/images/val/<wnid>/*.JPEG     (1000 class folders: sort the 50,000 validation images into class
                                           folders, e.g. with the valprep.sh script of PyTorch's ImageNet example)
Symbolic links to an existing copy work. classnames.txt (CLIP's class names) is downloaded by this command."""

CARS_MANUAL = """\
Stanford Cars cannot be downloaded automatically: its original links (ai.stanford.edu/~jkrause/cars) are offline.
Get cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat from a mirror (e.g. the
"stanford-cars-dataset" copies on Kaggle) and arrange them as
    {folder}/cars_train/*.jpg
    {folder}/cars_test/*.jpg
    {folder}/devkit/                              (only needed without the split file)
    {folder}/cars_test_annos_withlabels.mat       (only needed without the split file)
The split file split_zhou_StanfordCars.json is downloaded by this command."""

SKETCH_MANUAL = """\
ImageNet-Sketch is not downloaded automatically. Get ImageNet-Sketch.zip via the links at
https://github.com/HaohanWang/ImageNet-Sketch, extract it and rename its sketch/ folder so that
    {folder}/images/<wnid>/*.JPEG   (1000 class folders)
classnames.txt is copied from imagenet/ (or downloaded) by this command."""

RECIPES_LIST: tuple[Recipe, ...] = (
    Recipe(
        "ImageNet",
        "imagenet",
        "imagenet",
        required=("images/train", "images/val", "classnames.txt"),
        steps=(Fetch(IMAGENET_CLASSNAMES, "classnames.txt"),),
        manual=IMAGENET_MANUAL,
        class_folders=(("images/train", 1000), ("images/val", 1000)),
    ),
    split_recipe(
        "Caltech101",
        "caltech-101",
        "caltech101",
        "101_ObjectCategories",
        "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN",
        steps=(
            Extract(
                Source(
                    "caltech-101.zip",
                    url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                    md5="3138e1922a9193bfa496528edbbc45d0",
                ),
                creates="101_ObjectCategories",
                nested="caltech-101/101_ObjectCategories.tar.gz",
            ),
        ),
    ),
    split_recipe(
        "OxfordPets",
        "oxford_pets",
        "oxford_pets",
        "images",
        "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs",
        steps=(
            Extract(
                Source(
                    "images.tar.gz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
                    md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
                ),
                creates="images",
            ),
            Extract(
                Source(
                    "annotations.tar.gz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
                    md5="95a8c909bbe2e81eed6a22bccdf3f68f",
                ),
                creates="annotations",
            ),
        ),
    ),
    split_recipe(
        "StanfordCars",
        "stanford_cars",
        "stanford_cars",
        "",
        "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT",
        required=("cars_train", "cars_test", "split_zhou_StanfordCars.json"),
        manual=CARS_MANUAL,
    ),
    split_recipe(
        "OxfordFlowers",
        "oxford_flowers",
        "oxford_flowers",
        "jpg",
        "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT",
        steps=(
            Extract(
                Source(
                    "102flowers.tgz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
                    md5="52808999861908f626f3c1f4e79d11fa",
                ),
                creates="jpg",
            ),
            Fetch(
                Source(
                    "imagelabels.mat",
                    url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
                    md5="e0620be6f572b9609742df49c70aed4d",
                ),
                "imagelabels.mat",
            ),
            Fetch(Source("cat_to_name.json", drive_id="1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"), "cat_to_name.json"),
        ),
    ),
    split_recipe(
        "Food101",
        "food-101",
        "food101",
        "images",
        "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl",
        steps=(
            Extract(
                Source(
                    "food-101.tar.gz",
                    url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                    md5="85eeb15f3717b99a5da872d97d918f87",
                ),
                creates="images",
            ),
        ),
    ),
    Recipe(
        "FGVCAircraft",
        "fgvc_aircraft",
        "fgvc_aircraft",
        required=(
            "images",
            "variants.txt",
            "images_variant_train.txt",
            "images_variant_val.txt",
            "images_variant_test.txt",
        ),
        steps=(
            Extract(
                Source(
                    "fgvc-aircraft-2013b.tar.gz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                ),
                creates="images",
            ),
        ),
        image_lists=("images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt"),
        list_image_path="images/{}.jpg",
    ),
    split_recipe(
        "SUN397",
        "sun397",
        "sun397",
        "SUN397",
        "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq",
        steps=(
            Extract(
                Source(
                    "SUN397.tar.gz",
                    url="http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
                    md5="8ca2778205c41d23104230ba66911c7a",
                ),
                creates="SUN397",
            ),
            Extract(
                Source("Partitions.zip", url="https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"),
                creates="ClassName.txt",
            ),
        ),
    ),
    split_recipe(
        "DescribableTextures",
        "dtd",
        "dtd",
        "images",
        "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x",
        steps=(
            Extract(
                Source(
                    "dtd-r1.0.1.tar.gz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                    md5="fff73e5086ae6bdbea199a49dfb8a4c1",
                ),
                creates="images",
            ),
        ),
        aliases=("DTD",),
    ),
    split_recipe(
        "EuroSAT",
        "eurosat",
        "eurosat",
        "2750",
        "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o",
        steps=(
            Extract(
                # The original madm.dfki.de link is offline; this is the same RGB archive, as torchvision uses it.
                Source(
                    "EuroSAT.zip",
                    url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                    "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
                    md5="c8fa014336c82ac7804f0398fcb19387",
                ),
                creates="2750",
            ),
        ),
    ),
    split_recipe(
        "UCF101",
        "ucf101",
        "ucf101",
        "UCF-101-midframes",
        "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y",
        steps=(
            Extract(
                Source("UCF-101-midframes.zip", drive_id="10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O"),
                creates="UCF-101-midframes",
            ),
        ),
    ),
    imagenet_variant(
        "ImageNetV2",
        "imagenetv2",
        "imagenetv2",
        "imagenetv2-matched-frequency-format-val",
        1000,
        IMAGENET_CLASSNAMES,
        steps=(
            Extract(
                Source(
                    "imagenetv2-matched-frequency.tar.gz",
                    url="https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz",
                ),
                creates="imagenetv2-matched-frequency-format-val",
            ),
        ),
    ),
    imagenet_variant(
        "ImageNetSketch",
        "imagenet-sketch",
        "imagenet_sketch",
        "images",
        1000,
        IMAGENET_CLASSNAMES,
        manual=SKETCH_MANUAL,
    ),
    imagenet_variant(
        "ImageNetA",
        "imagenet-adversarial",
        "imagenet_a",
        "imagenet-a",
        200,
        IMAGENET_CLASSNAMES,
        steps=(
            Extract(
                Source("imagenet-a.tar", url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar"),
                creates="imagenet-a",
            ),
        ),
    ),
    imagenet_variant(
        "ImageNetR",
        "imagenet-rendition",
        "imagenet_r",
        "imagenet-r",
        200,
        IMAGENET_CLASSNAMES,
        steps=(
            Extract(
                Source("imagenet-r.tar", url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"),
                creates="imagenet-r",
            ),
        ),
    ),
    Recipe(
        "MYCIFAR100",
        "cifar100",
        "cifar100",
        required=("images/train", "images/test"),
        steps=(Build(write_cifar100, "images", "Writing CIFAR-100 as PNG files"),),
        class_folders=(("images/train", 100), ("images/test", 100)),
        aliases=("CIFAR100",),
    ),
    Recipe(
        "SyntheticShapes",
        "synthetic_shapes",
        "synthetic_shapes",
        required=("images", "split_zhou_SyntheticShapes.json"),
        steps=(Build(write_synthetic, "split_zhou_SyntheticShapes.json", "Generating the synthetic images"),),
        split_file="split_zhou_SyntheticShapes.json",
        image_subdir="images",
        aliases=("synthetic",),
    ),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in RECIPES_LIST}
