"""Downstream segmentation benchmark (paper Table 4): does synthetic data improve GM/WM/CSF
segmentation of real scans?

Modules: ``unet`` (the paper's 3D U-Net and a narrow CPU variant), ``metrics`` (Dice per class,
global Dice, losses), ``data`` (scans and label maps in memory, brain box), ``plan`` (the ten
tests scaled to the real set), ``train`` (early stopping on real validation scans),
``teacher`` (labels for synthetic scans), ``quality_gate`` (tissue-fraction screening) and
``bench`` (the resumable benchmark behind ``ratgan segbench``).
"""
