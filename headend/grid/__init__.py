"""Grid topology (meters under transformer areas and feeders) and planned outages."""

from headend.grid.outages import OutagePolicy, announce, cancel_outage, change_outage, plan_outage, resync_after_outages
from headend.grid.topology import read_grid_csv

__all__ = ["OutagePolicy", "announce", "cancel_outage", "change_outage", "plan_outage", "resync_after_outages",
           "read_grid_csv"]
