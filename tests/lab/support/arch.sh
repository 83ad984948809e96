#!/bin/sh
# rvlab: arch inside an emulated board.
exec uname -m
