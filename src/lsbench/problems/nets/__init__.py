"""Network architectures of the thesis experiments beyond the CIFAR ResNet-20/32 (which live in
:mod:`lsbench.problems.models`): DenseNet-40 and DenseNet-121, MobileNetV2, EfficientNet-B0, the ResNet-18/34/50
CIFAR and ImageNet variants, and the Tolstoi character-level RNN.

Models are built by key through :func:`lsbench.problems.models.build_model`; the modules here hold the classes and
the constructors with all their options.
"""
