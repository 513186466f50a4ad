"""EuroSAT RGB (Helber et al., 2019) in CoOp's format: 10 land-cover classes."""

from .base import Split, SplitFileDataset, register_dataset, split_folders

# CoOp's descriptive names for the folder names (the published split file carries them too).
NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@register_dataset
class EuroSAT(SplitFileDataset):
    """``eurosat/{2750/<class>/*.jpg, split_zhou_EuroSAT.json}``."""

    dataset_dir = "eurosat"
    image_subdir = "2750"

    def make_split(self) -> tuple[Split, Split, Split]:
        return split_folders(self.image_dir, new_cnames=NEW_CNAMES)
