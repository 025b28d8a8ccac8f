"""The lab: data centers of real processes on one machine, for drills through real adapters.

``daemon`` starts and stops the programs (each detached, logging to a file, stopped by PID);
one module per program writes its configuration and knows when it is ready.
"""
