"""Loaders for the public archives users download once (wearable activity, EEG, gait, UCR/UEA, CIFAR): each
reads the archive's own on-disk format from a local folder (``base.find_folder``) and returns the windows of the
literature's protocol. One module per archive defines ``ARCHIVE`` (``base.Archive``)."""
