"""Regenerate products/products.parquet (40 Northwind products).

Usage:  python make_products.py      (requires: pip install pyarrow)

Schema: product_sku str, name str, category str, price float64, currency str,
active bool, updated_at timestamp[us]. SKUs are referenced by
transactions/transactions.jsonl, so keep them stable.
"""
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# (sku, name, category, price_usd, active, updated_at)
PRODUCTS = [
    ("NW-TNT-001", "Basecamp 6 Family Tent", "tents", 549.00, True, "2024-03-02T10:15:00"),
    ("NW-TNT-002", "Ridgeline 2P Backpacking Tent", "tents", 429.00, True, "2024-03-02T10:15:00"),
    ("NW-TNT-003", "Ridgeline 1P Backpacking Tent", "tents", 349.00, True, "2024-03-02T10:15:00"),
    ("NW-TNT-012", "Ridgeline 2P Footprint", "tents", 49.95, True, "2024-01-18T08:00:00"),
    ("NW-SLP-001", "Aurora -7 Down Sleeping Bag", "sleeping", 389.00, True, "2024-02-11T09:30:00"),
    ("NW-SLP-002", "Aurora +2 Down Sleeping Bag", "sleeping", 319.00, True, "2024-02-11T09:30:00"),
    ("NW-SLP-005", "Drift Insulated Sleeping Pad", "sleeping", 149.95, True, "2024-02-11T09:30:00"),
    ("NW-SLP-006", "Silk Travel Sleeping Bag Liner", "sleeping", 59.95, True, "2023-11-04T14:00:00"),
    ("NW-STV-001", "Emberlite Micro Canister Stove", "cooking", 64.95, True, "2024-01-05T12:00:00"),
    ("NW-STV-004", "Emberlite 230 g Fuel Canister", "cooking", 7.49, True, "2024-01-05T12:00:00"),
    ("NW-CKW-002", "Titanium 750 ml Pot", "cooking", 44.95, True, "2023-10-20T16:45:00"),
    ("NW-WTR-002", "PureWell 4L Gravity Filter", "water", 119.95, True, "2024-04-01T07:00:00"),
    ("NW-WTR-003", "PureWell Replacement Cartridge", "water", 39.95, True, "2024-04-01T07:00:00"),
    ("NW-LGT-003", "Lumen X300 Rechargeable Headlamp", "electronics", 69.95, True, "2024-02-28T11:20:00"),
    ("NW-GPS-001", "Trailmark GPS Watch", "electronics", 349.00, True, "2024-03-15T09:00:00"),
    ("NW-GPS-002", "Trailmark GPS Watch (2022 edition)", "electronics", 249.00, False, "2023-09-30T17:00:00"),
    ("NW-KYK-001", "Driftline 12 Touring Kayak", "paddling", 1099.00, True, "2024-04-10T13:10:00"),
    ("NW-PDL-002", "Driftline Carbon Touring Paddle", "paddling", 229.00, True, "2024-04-10T13:10:00"),
    ("NW-PFD-001", "Current Touring PFD", "paddling", 129.95, True, "2024-04-10T13:10:00"),
    ("NW-APP-010", "Stormline 3L Rain Jacket", "apparel", 299.00, True, "2024-01-22T10:00:00"),
    ("NW-APP-011", "Granite Grid Fleece Hoody", "apparel", 119.00, True, "2024-01-22T10:00:00"),
    ("NW-APP-012", "Ember 800 Down Hoody", "apparel", 279.00, True, "2024-01-22T10:00:00"),
    ("NW-APP-020", "Tamarack Merino 150 Crew", "apparel", 79.95, True, "2024-01-22T10:00:00"),
    ("NW-APP-021", "Tamarack Merino 250 Zip-Neck", "apparel", 104.95, True, "2024-01-22T10:00:00"),
    ("NW-APP-022", "Switchback Synthetic Tee", "apparel", 39.95, True, "2024-01-22T10:00:00"),
    ("NW-APP-030", "Alpine Softshell Pants", "apparel", 149.00, False, "2023-08-14T15:30:00"),
    ("NW-FTW-001", "Cascade Trail 4 Running Shoe", "footwear", 144.95, True, "2024-03-20T08:45:00"),
    ("NW-FTW-002", "Cascade Trail 4 Wide Running Shoe", "footwear", 144.95, True, "2024-03-20T08:45:00"),
    ("NW-FTW-003", "Talus Pro Trail Running Shoe", "footwear", 164.95, True, "2024-03-20T08:45:00"),
    ("NW-FTW-010", "Rimrock Mid Waterproof Hiking Boot", "footwear", 189.95, True, "2024-03-20T08:45:00"),
    ("NW-PCK-001", "Traverse 65 Backpack", "packs", 279.00, True, "2024-02-05T10:10:00"),
    ("NW-PCK-002", "Traverse 45 Backpack", "packs", 239.00, True, "2024-02-05T10:10:00"),
    ("NW-PCK-010", "Scout 22 Daypack", "packs", 89.95, True, "2024-02-05T10:10:00"),
    ("NW-TRK-001", "Ascent Carbon Trekking Poles", "packs", 159.95, True, "2024-02-05T10:10:00"),
    ("NW-CLM-001", "Crux Climbing Harness", "climbing", 74.95, True, "2023-12-01T09:00:00"),
    ("NW-CLM-004", "Granite Locking Carabiner", "climbing", 14.95, True, "2023-12-01T09:00:00"),
    ("NW-AVY-001", "Avalanche Safety Kit (beacon, shovel, probe)", "snow", 449.00, True, "2023-11-15T12:00:00"),
    ("NW-CMP-006", "Summit Lite Folding Camp Chair", "camp", 64.95, False, "2024-08-19T09:00:00"),
    ("NW-CMP-007", "Summit Lite Folding Camp Chair v2", "camp", 69.95, True, "2024-09-02T09:00:00"),
    ("NW-CMP-010", "Bear-Resistant Food Canister", "camp", 84.95, True, "2023-06-01T10:00:00"),
]

SCHEMA = pa.schema([
    ("product_sku", pa.string()),
    ("name", pa.string()),
    ("category", pa.string()),
    ("price", pa.float64()),
    ("currency", pa.string()),
    ("active", pa.bool_()),
    ("updated_at", pa.timestamp("us")),
])


def main():
    cols = list(zip(*PRODUCTS))
    table = pa.Table.from_arrays(
        [
            pa.array(cols[0], pa.string()),
            pa.array(cols[1], pa.string()),
            pa.array(cols[2], pa.string()),
            pa.array(cols[3], pa.float64()),
            pa.array(["USD"] * len(PRODUCTS), pa.string()),
            pa.array(cols[4], pa.bool_()),
            pa.array([datetime.fromisoformat(t) for t in cols[5]], pa.timestamp("us")),
        ],
        schema=SCHEMA,
    )
    out = Path(__file__).parent / "products" / "products.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    print(f"wrote {out} ({table.num_rows} rows)")


if __name__ == "__main__":
    main()
