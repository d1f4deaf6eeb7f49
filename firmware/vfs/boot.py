# /boot.py, installed by streetgrid-field deploy: the app slot this boot runs (app_slots.py)
import app_slots
import machine
import sys
import vfs

app_slots.select(machine, vfs, sys)
del app_slots, machine, sys, vfs
