"""Small, faithful replicas of the architectures people explain, and the technique matrix on them.

timm cannot be imported here (it imports torchvision, whose wheels do not load with the CPU torch
build), so :mod:`tests.realarch.replicas_torch` rebuilds the patterns of torchvision/timm models
at small sizes with random weights; :mod:`tests.realarch.replicas_keras` uses
``keras.applications`` itself (``weights=None``). :mod:`tests.realarch.test_matrix` runs every
built-in technique on them.
"""
