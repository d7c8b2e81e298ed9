"""wflora on Flower: a ServerApp whose strategy is TSFA and ClientApps that
train and compress with wflora. Both sides are wflora's protocol roles; the
apps only carry their bytes in Flower messages."""
