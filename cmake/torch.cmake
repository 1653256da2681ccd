# LibTorch adapter: sparselink_torch (lands with the training issue).
