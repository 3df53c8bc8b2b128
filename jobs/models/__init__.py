"""Models a spec can name and their capture stages: names (no torch), the zoo, timm/torchvision/user builders."""
