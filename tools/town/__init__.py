"""A simulated town for demos, scenario tests and the load-and-fault run.

plan.py      who lives where: meters, customers, districts, feeders, transformer areas, buses
load.py      each household's demand: daily shape, season, noise, heavy users, empty flats
register.py  the town into a head-end store in one step (accounts, meters, grid)
control.py   line commands to a running town (faults, the button, meter status)
run.py       the town served (``meter fleet --town``, ``python -m tools.town``)
paygen.py    the town's customers paying through the payments API
"""
