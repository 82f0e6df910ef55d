#!/bin/bash
cd "$(dirname "$0")"
timeout 200 bash rust_ab.sh
bash py_run.sh
