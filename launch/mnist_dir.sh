# Sourced by the launch scripts (needs $ROOT, the checkout): MNIST from
# ../shared/data/mnist when that folder exists and MNIST_MANUAL_DIR is unset;
# otherwise (or with MNIST_MANUAL_DIR="") tfds downloads the archives.
if [ -z "${MNIST_MANUAL_DIR+set}" ] && [ -d "$ROOT/../shared/data/mnist" ]; then
  export MNIST_MANUAL_DIR="$ROOT/../shared/data/mnist"
fi
