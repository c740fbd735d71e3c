"""What a config will cost before it runs (``tafs plan``): parameters of the real models from their configs
(``model_sizes``, ``catalogue``), peak GPU memory per job (``memory``, ``activations``), seconds per iteration and
GPU-hours from FLOPs (``timing``), and the per-stage answers ``tafs plan`` prints (``estimate``; the command: ``command``)."""
