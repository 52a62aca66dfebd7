"""Regenerate the sample PDF documents under documents/.

Usage:  python make_pdfs.py      (requires: pip install fpdf2)

Each entry in DOCS is  relative-path -> list of pages; a page is a list of
("h1" | "h2" | "p", text) blocks. Only fpdf2 core fonts are used, so all text
must be latin-1. Output is deterministic (fixed creation date).
Also writes documents/manuals/corrupt-manual.pdf: the first 40% of the bytes
of a valid PDF (a deliberately truncated file for ingestion quarantine tests).
"""
import datetime
from pathlib import Path

from fpdf import FPDF

ROOT = Path(__file__).parent / "documents"
FIXED_DATE = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)

DOCS = {
    "manuals/driftline-12-kayak-manual.pdf": [
        [
            ("h1", "Driftline 12 Touring Kayak - Owner's Manual"),
            ("p", "Model NW-KYK-001. Length 3.66 m (12 ft), width 71 cm, weight 21.5 kg, maximum load capacity 136 kg (300 lb) including paddler and gear. Cockpit 84 x 46 cm. The Driftline 12 is a sit-inside recreational touring kayak for lakes, slow rivers and sheltered coastal water in wind below 15 knots."),
            ("h2", "1. Safety first"),
            ("p", "Always wear a properly fitted, US Coast Guard approved personal flotation device (PFD). Check the weather and water temperature before launching: if the water is colder than 15 degrees C, wear a wetsuit or drysuit, because cold-water immersion can cause incapacitation within minutes. Never paddle alone in open water, never exceed the 136 kg load limit, and stay within swimming distance of shore unless you have practiced assisted rescues."),
            ("p", "Carry a bilge pump, a paddle float, a whistle and, after sunset, a white light visible through 360 degrees. File a float plan with someone on shore that includes your route and expected return time."),
            ("h2", "2. Parts of your kayak"),
            ("p", "The hull is rotomolded from three layers of polyethylene. Two sealed bulkheads create a bow compartment (38 L) and a stern compartment (52 L) that keep the kayak afloat if the cockpit floods. Both hatches use a rubber inner cover under a hard outer lid. The retractable skeg is deployed with the slider on the left side of the cockpit rim. The seat back adjusts with two ratchet straps, and the foot pegs slide on rails with 12 positions."),
        ],
        [
            ("h2", "3. Adjusting the fit"),
            ("p", "Sit in the kayak on land. Slide the foot pegs so that your knees are slightly bent and rest against the thigh braces under the cockpit rim. Your heels should touch the hull and the balls of your feet the pegs. Tighten the seat-back straps until you sit upright without slouching. A snug fit lets you edge the kayak with your hips and improves paddling efficiency."),
            ("h2", "4. Using the skeg"),
            ("p", "The skeg is a small retractable fin at the stern that helps the kayak track straight in crosswinds. Deploy it fully when the wind comes from the side or from behind and the kayak keeps turning into the wind (weathercocking). Raise it in shallow water, when landing, and when launching from a beach, since hitting rocks with the skeg down can jam the cable. If the skeg jams, rinse the skeg box with fresh water and work the slider gently; never force it."),
            ("h2", "5. Launching and landing"),
            ("p", "Carry the kayak with two people using the bow and stern toggle handles; do not drag it over gravel or concrete. Launch with the kayak parallel to the shore in shallow water. Place the paddle across the back of the cockpit as an outrigger, sit down on the rear deck, then slide into the seat. Land the same way in reverse."),
            ("h2", "6. Capsize and self-rescue"),
            ("p", "If you capsize, hold on to your paddle and kayak. To re-enter alone, use the paddle float: attach it to one paddle blade, secure the other blade under the rear deck bungees, and use the paddle as an outrigger while you climb onto the rear deck and swing your legs into the cockpit. Pump out the water with the bilge pump before paddling on. Practice this rescue in warm, shallow water before your first trip."),
        ],
        [
            ("h2", "7. Transport and storage"),
            ("p", "Transport the kayak on padded J-cradles or saddles, hull side down or on its side, never on flat bars that dent the hull. Use two cam straps over the hull plus bow and stern lines to the car's tow points. Do not ratchet straps too tightly; polyethylene deforms in the sun. Store the kayak out of direct sunlight, supported at the bulkheads, or hung in wide slings. Leave hatch covers off during storage so the compartments can dry."),
            ("h2", "8. Maintenance"),
            ("p", "Rinse the kayak, skeg box and foot-peg rails with fresh water after every trip, especially in salt water. Treat the hull and hatch rims with a UV protectant spray every 3 months. Inspect the skeg cable, hatch gaskets and deck lines at the start of every season. Deep scratches are normal and do not affect safety; holes or cracks must be repaired by a professional."),
            ("h2", "9. Warranty"),
            ("p", "The Driftline 12 hull is warranted against defects in materials and workmanship for 5 years from purchase; outfitting (seat, skeg, hatches, foot pegs) is warranted for 2 years. Damage from improper transport, storage in direct sun, or commercial rental use is not covered. Register your kayak with its hull identification number (HIN, stamped at the stern on the right side) within 30 days of purchase."),
        ],
    ],
    "manuals/purewell-gravity-filter.pdf": [
        [
            ("h1", "PureWell 4L Gravity Water Filter - Instructions"),
            ("p", "Model NW-WTR-002. The PureWell 4L filters water by gravity through a 0.1 micron hollow-fiber cartridge. It removes 99.9999% of bacteria (such as E. coli and Salmonella) and 99.9% of protozoa (such as Giardia and Cryptosporidium). It does NOT remove viruses, chemicals or salt. Flow rate: about 1.5 liters per minute when new. Cartridge capacity: 1,500 liters."),
            ("h2", "Setup"),
            ("p", "1. Fill the 4-liter dirty-water reservoir (marked with a red band) at a stream or lake. Scoop from moving water where possible. 2. Hang the reservoir from a branch at least 1.5 m above the ground. 3. Connect the hose to the clean-water bottle or the 2-liter clean reservoir (blue band). 4. Open the pinch clamp; water starts flowing within a few seconds."),
            ("h2", "Backflushing"),
            ("p", "When the flow rate falls below about 0.5 liters per minute, backflush the cartridge: fill the clean reservoir with filtered water, hold it above the cartridge, and let the water run backwards through the filter for 30 seconds. Repeat up to three times. Backflush after every trip in silty water, such as glacial streams."),
            ("h2", "Freezing warning"),
            ("p", "Never let a used cartridge freeze. Ice crystals can crack the hollow fibers and the filter will no longer remove pathogens, with no visible sign of damage. In freezing weather, keep the cartridge in a zip bag inside your sleeping bag at night and in an inside jacket pocket during the day. If you suspect the cartridge has frozen, replace it (part PW-CART-01)."),
            ("h2", "Storage"),
            ("p", "After your trip, backflush, then disinfect by running 1 liter of clean water with two drops of unscented household bleach through the filter. Let all parts air-dry completely for 48 hours before storing. Replace the cartridge after 1,500 liters or when backflushing no longer restores the flow."),
        ],
    ],
    "policies/product-recall-notice-2024.pdf": [
        [
            ("h1", "Voluntary Recall Notice: Summit Lite Folding Camp Chair"),
            ("p", "Date of notice: August 19, 2024. Recall number NW-RC-2024-02. Northwind Outfitters, in cooperation with the U.S. Consumer Product Safety Commission, is voluntarily recalling the Summit Lite Folding Camp Chair (SKU NW-CMP-006) because the rear leg hinge rivet can break, causing the chair to collapse and posing a fall hazard."),
            ("h2", "Affected products"),
            ("p", "About 8,300 chairs sold between March 1 and July 31, 2024 in Northwind stores and online for $64.95. Affected chairs have lot codes 24031 through 24072 printed on the white label sewn under the seat. Chairs in the colors Slate Grey and Canyon Orange are affected; the Forest Green color uses a different hinge and is not part of this recall."),
            ("h2", "Incidents"),
            ("p", "Northwind has received 14 reports of chairs collapsing, including 3 reports of minor injuries (bruises and a sprained wrist). No serious injuries have been reported."),
            ("h2", "What customers should do"),
            ("p", "Stop using the recalled chairs immediately. Return the chair to any Northwind store for a full refund of $64.95 plus a $20 gift card, with or without a receipt. Customers who cannot reach a store can request a free prepaid return label at recalls@northwindoutfitters.example or by calling 1-800-555-0177 (Monday to Friday, 8 a.m. to 5 p.m. Pacific). Alternatively, customers may choose a free replacement chair from the redesigned lot 24090 or later."),
            ("h2", "Store instructions"),
            ("p", "Stores must pull all affected lots from shelves and stockrooms, mark them with red RECALL tags, and hold them for pickup by the reverse-logistics carrier. Use register reason code RC-24-02 for recall refunds; no manager approval is required."),
        ],
    ],
    "policies/supplier-code-of-conduct.pdf": [
        [
            ("h1", "Supplier Code of Conduct"),
            ("p", "Version 3.0, approved by the Northwind Outfitters Sourcing Committee on October 2, 2023. This Code applies to every factory, mill and subcontractor that produces goods for Northwind-brand products. Suppliers must sign the Code before the first purchase order and share it with their workers in the local language."),
            ("h2", "1. Labor standards"),
            ("p", "No child labor: workers must be at least 16 years old, or older if local law requires. Young workers under 18 must not perform hazardous work or night shifts. No forced, bonded or prison labor; suppliers may not hold workers' identity documents or charge recruitment fees. Regular working hours may not exceed 48 per week, and total hours including overtime may not exceed 60 per week. Workers must have at least one day off in every seven days. All overtime must be voluntary and paid at a premium rate."),
            ("h2", "2. Wages"),
            ("p", "Suppliers must pay at least the legal minimum wage and work towards a living wage. Wages are paid at least monthly, directly to the worker, with a written pay slip. Deductions as a disciplinary measure are not allowed."),
            ("h2", "3. Health, safety and environment"),
            ("p", "Factories must have unblocked and marked emergency exits on every floor, fire drills every 6 months, and first-aid trained staff on every shift. Chemicals must follow the Northwind Restricted Substances List, which bans PFAS (per- and polyfluoroalkyl substances) in all durable water repellent finishes since January 2024."),
        ],
        [
            ("h2", "4. Audits and remediation"),
            ("p", "Every Tier 1 factory is audited by an independent third party before onboarding and at least every 18 months afterwards, with at least one unannounced audit every three years. Findings are rated as zero tolerance, major or minor. Zero-tolerance findings (child labor, forced labor, falsified records, or an imminent risk to life) lead to immediate suspension of new orders. Major findings require a corrective action plan within 30 days and verification within 90 days."),
            ("h2", "5. Grievance mechanism"),
            ("p", "Workers must have access to a confidential grievance channel. Northwind operates a multilingual hotline and a messaging-app channel, run by an independent organization, in all sourcing countries (Vietnam, Bangladesh, China, Portugal and El Salvador). Retaliation against workers who raise concerns is a zero-tolerance violation."),
            ("h2", "6. Business integrity"),
            ("p", "Suppliers may not offer gifts worth more than $50 to Northwind employees, and must disclose any family relationship with Northwind staff. Subcontracting production without written approval from Northwind Sourcing is prohibited. Report concerns to ethics@northwindoutfitters.example."),
        ],
    ],
    "policies/pro-deal-program.pdf": [
        [
            ("h1", "Northwind Pro Program - Discounts for Outdoor Professionals"),
            ("p", "The Northwind Pro Program gives working outdoor professionals discounted access to gear they use on the job. Approved members receive 40% off Northwind-brand products and 25% off participating partner brands."),
            ("h2", "Who qualifies"),
            ("p", "Certified mountain, climbing, ski and river guides; avalanche educators; ski patrollers; search-and-rescue team members; outdoor educators employed by schools or nonprofits; wildland firefighters; and park rangers. Applicants must be actively employed or volunteering at least 40 days per year and provide proof such as a current certification card, an employer letter, or an SAR team roster."),
            ("h2", "How to apply"),
            ("p", "Apply online through the Pro Program page. Upload proof of employment and a copy of your current certification. Applications are reviewed within 10 business days. Approved memberships are valid for 12 months and must be renewed with updated documents."),
            ("h2", "Limits and rules"),
            ("p", "Pro purchases are limited to $3,000 per calendar year and to two units of any single product per year. Gear bought under the Pro Program is for personal professional use only; resale is prohibited and leads to permanent removal from the program. Pro pricing cannot be combined with sales, price matching or Trailpoints rewards, and Pro purchases do not earn Trailpoints. Pro Program items may be returned within 30 days."),
            ("h2", "Contact"),
            ("p", "pro@northwindoutfitters.example - The Pro Program team is based in the Boulder store."),
        ],
    ],
    "hr/expense-reimbursement.pdf": [
        [
            ("h1", "Employee Travel and Expense Reimbursement Policy (Restricted)"),
            ("p", "Classification: Internal - Restricted. Owner: Finance. Effective January 1, 2024. Applies to all employees who incur business expenses on behalf of Northwind Outfitters."),
            ("h2", "Submitting expenses"),
            ("p", "Submit expense reports in Concur within 30 days of the expense. Reports submitted after 90 days will not be reimbursed except with approval from the CFO. Itemized receipts are required for every expense of $25 or more. Reimbursements are paid by direct deposit with the next regular payroll after manager approval."),
            ("h2", "Travel"),
            ("p", "Book flights and hotels through the company travel portal (Navan). Economy class is required for flights under 6 hours; premium economy is allowed for flights of 6 hours or more. Hotel rates are capped at $225 per night in most cities and $325 per night in New York, San Francisco and Seattle, before taxes."),
            ("h2", "Meals and per diem"),
            ("p", "When traveling overnight, employees receive a meal per diem of $65 per full day ($48 on the first and last day of travel) instead of submitting meal receipts. Alcohol is reimbursed only at approved client or team events, up to 2 drinks per person."),
            ("h2", "Mileage"),
            ("p", "Use of a personal vehicle is reimbursed at the IRS rate of $0.67 per mile for 2024, for miles beyond the normal commute. Log trips with start and end address in Concur. Parking and tolls are reimbursed with receipts. Traffic and parking fines are never reimbursed."),
            ("h2", "Non-reimbursable items"),
            ("p", "Personal gear (even if used for a work event), upgrades, in-room movies, minibar, laundry on trips shorter than 5 nights, and expenses of family members traveling with the employee."),
        ],
    ],
    "guides/climbing-harness-inspection.pdf": [
        [
            ("h1", "Climbing Harness Inspection and Retirement Guide"),
            ("p", "This guide is used by Northwind climbing wall staff and is shared with customers who buy a harness such as the Northwind Crux harness (SKU NW-CLM-001). Inspect your harness before every climbing session and do a detailed inspection every 3 months."),
            ("h2", "Before every climb"),
            ("p", "Check that the waist belt and leg loops are correctly threaded and the buckles are doubled back or locked (auto-locking buckles must show no red indicator). Check the belay loop and tie-in points for cuts, abrasion or fuzziness. The belay loop is the single most loaded point of the harness: if its core threads are visible, retire the harness immediately."),
            ("h2", "Detailed inspection every 3 months"),
            ("p", "Lay the harness out in good light. Run every strap through your fingers looking for: cuts or frayed edges deeper than 1 mm; shiny, glazed or stiff areas caused by heat from a rope running over them; discoloration from chemicals (battery acid and solvents can weaken nylon without visible damage); broken or pulled stitching in the bar-tacks, which use a contrasting thread color so that damage is easier to see; and cracked, bent or corroded buckles."),
            ("h2", "When to retire a harness"),
            ("p", "Retire a harness after any of the following: a severe fall (fall factor close to 2) or any fall onto the harness during which something felt wrong; any of the damage described above; contact with acids, bleach or solvents; or if you do not know its history. Even without visible damage, retire a harness after 5 years of occasional use, after 1 year of intensive daily use, and in any case 10 years after its manufacturing date (printed on the label inside the waist belt), because nylon ages even when stored."),
            ("h2", "Care"),
            ("p", "Wash by hand in lukewarm water (max 30 degrees C) with mild soap, rinse and air-dry in the shade. Store away from sunlight, heat and chemicals - never in a car trunk next to a battery. Cut retired harnesses in half before disposal so nobody uses them again."),
        ],
    ],
    "reports/sustainability-report-2023.pdf": [
        [
            ("h1", "Northwind Outfitters Sustainability Report 2023"),
            ("p", "Published April 22, 2024. This report covers fiscal year 2023 (February 1, 2023 to January 31, 2024) and all Northwind stores, distribution centers, offices and Northwind-brand products."),
            ("h2", "Highlights"),
            ("p", "62% of the polyester used in Northwind-brand apparel was recycled polyester, up from 41% in 2022. 100% of the down in Northwind-brand products is certified to the Responsible Down Standard. PFAS were eliminated from all durable water repellent finishes as of January 2024. The Worn Again trade-in program collected 18,400 used items, of which 71% were resold, 19% repaired for the rental fleet and 10% recycled."),
            ("h2", "Climate"),
            ("p", "Total greenhouse gas emissions were 48,900 tonnes CO2e, of which scope 1 and 2 emissions (stores, distribution centers, company vehicles) were 1,240 tonnes CO2e, a 22% reduction from the 2019 baseline. Since October 2023, the Reno distribution center runs on 100% renewable electricity from a 2.1 MW rooftop solar array plus a green tariff. Scope 3 emissions, mainly from manufacturing and materials, account for 97% of the footprint. Target: reduce scope 1 and 2 emissions 50% and scope 3 emissions 30% by 2030 compared with 2019."),
        ],
        [
            ("h2", "Packaging"),
            ("p", "Online orders now ship in boxes with at least 80% recycled content, and single-use plastic polybags were replaced with paper bags for 85% of apparel styles. Goal: zero plastic polybags by the end of 2025."),
            ("h2", "Community"),
            ("p", "Northwind donated 1% of sales, or $3.1 million, to trail maintenance, conservation and youth access organizations. Employees logged 6,200 volunteer hours, including 41 trail work days. Each employee receives 16 hours of paid volunteer time per year."),
            ("h2", "Looking ahead"),
            ("p", "In 2024 Northwind will publish a full list of Tier 1 and Tier 2 suppliers, expand the Worn Again program to all 14 stores, and introduce repair-cost estimates on product pages."),
        ],
    ],
}

# Source for the truncated PDF: a valid one-page manual, cut to 40% of its bytes.
CORRUPT_SOURCE = [[
    ("h1", "Ascent Carbon Trekking Poles - Manual"),
    ("p", "Model NW-TRK-001. Three-section carbon trekking poles with flick-lock adjustment from 105 to 135 cm. " * 6),
    ("h2", "Adjusting length"),
    ("p", "Open the flick lock, extend the section to the desired mark, and close the lock firmly. " * 8),
]]


def render(pages) -> bytes:
    pdf = FPDF(format="Letter")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_author("Northwind Outfitters")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(20, 20, 20)
    for page in pages:
        pdf.add_page()
        for kind, text in page:
            if kind == "h1":
                pdf.set_font("Helvetica", "B", 16)
                pdf.multi_cell(0, 8, text)
                pdf.ln(4)
            elif kind == "h2":
                pdf.ln(2)
                pdf.set_font("Helvetica", "B", 12)
                pdf.multi_cell(0, 7, text)
                pdf.ln(1)
            else:
                pdf.set_font("Helvetica", "", 10.5)
                pdf.multi_cell(0, 5.5, text)
                pdf.ln(2)
    return bytes(pdf.output())


def main():
    for rel, pages in DOCS.items():
        out = ROOT / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(render(pages))
        print("wrote", out)
    full = render(CORRUPT_SOURCE)
    bad = ROOT / "manuals/corrupt-manual.pdf"
    bad.write_bytes(full[: int(len(full) * 0.4)])
    print("wrote", bad, "(truncated)")


if __name__ == "__main__":
    main()
