"""GenEval (Ghosh et al. 2023) without mmdet: the rules (``rules``), a transformers Mask2Former detector
(``detector``), the CLIP colour classifier (``colour``) and the two rewards (``reward``)."""
