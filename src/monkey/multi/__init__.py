"""Several subjects in one image (`method=monkey_multi`, docs/multi_subject.md).

plan.py     items with N subjects: the seeded pairing rule, the N-subject prompt, seeds and paths
regions.py  per-subject masks from per-subject maps, made disjoint by a stated overlap rule
sampler.py  MONKEY's two passes with N images through one IP-Adapter, one mask each
method.py   MonkeyMultiMethod (the harness's Method) and the N-subject embedding stack
"""
