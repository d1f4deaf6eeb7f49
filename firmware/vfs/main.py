# /main.py, installed by streetgrid-field deploy: the app; a crash resets the board (the REPL
# would leave it dead until someone came), and the boot counts it (firmware/boot_health.py)
try:
    from firmware import main

    main.run()
except (KeyboardInterrupt, SystemExit):
    raise  # Ctrl-C: the technician's REPL; SystemExit: a reset already under way
except BaseException as e:  # noqa: B036
    import machine
    import sys
    import time

    sys.print_exception(e)
    print("main: crashed; reset in 5 s (Ctrl-C for the REPL)")
    time.sleep(5)
    machine.reset()
