#!/usr/bin/env bash
# Example launch template for kiln-pool that starts each worker in its own confidential VM instead of
# a local process:
#
#   kiln-pool --launch "cluster/launch-cvm.example.sh {id} {broker}"
#
# The pool only needs the command to stay in the foreground while the worker runs and to exit when it
# does; the worker inside the VM connects to the broker, takes one build and powers the VM off.
# Replace the qemu line with your cloud's CLI (e.g. an SEV-SNP or TDX instance created from the
# worker image, with user-data carrying the broker URL and worker id).
set -euo pipefail
id="$1"; broker="$2"
image=${KILN_WORKER_IMAGE:-/var/lib/kiln/images/worker-sev-snp.qcow2}
exec qemu-system-x86_64 -enable-kvm -cpu EPYC-v4 -machine q35,confidential-guest-support=sev0,memory-backend=ram1 \
  -object memory-backend-memfd,id=ram1,size=8G,share=true \
  -object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1 \
  -m 8G -smp 4 -nographic -snapshot -drive file="$image",if=virtio \
  -fw_cfg name=opt/kiln/worker,string="--broker $broker --worker-id $id --key /run/kiln/farm.pem"
