"""MONKEY (Masking ON KEY-Value Activation): record where the subject's image tokens attend in a
short first pass, turn that attention into a subject mask, and regenerate with the image tokens
acting only inside the mask.

    settings.py  every knob, validated once
    capture.py   the recording attention processor and the per-step controller of a pipeline call
    masks.py     recorded maps -> subject mask (token, layers, steps, normalise, threshold, upsample)
    sampler.py   the two-pass sampler on any diffusers text-to-image pipeline with an IP-Adapter
    artifacts.py mask and overlay images for the run folder
    method.py    MonkeyMethod, the harness's Method
"""
