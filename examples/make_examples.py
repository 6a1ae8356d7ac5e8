"""Regenerate the bundled sample documents in ``examples/docs``.

The project made these itself (no third-party content): a PDF report with a table
and a chart, a slide deck, a Word document and an HTML page. They are committed, so
this script only needs to run when they change::

    uv run python examples/make_examples.py
"""

from __future__ import annotations

import logging
from pathlib import Path

from docx import Document
from docx.shared import Pt
from pptx import Presentation
from pptx.chart.data import CategoryChartData
from pptx.dml.color import RGBColor
from pptx.enum.chart import XL_CHART_TYPE
from pptx.util import Inches
from pptx.util import Pt as PptPt
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

OUT = Path(__file__).parent / "docs"
logger = logging.getLogger("make_examples")

REGIONS = [("North", 412, 388, 9.1), ("South", 356, 301, 18.3), ("East", 290, 305, -4.9), ("West", 518, 447, 15.9)]
MONTHS = ["Jul", "Aug", "Sep"]
INSTALLS = [(120, 135, 160), (80, 95, 90)]


def make_pdf_report(path: Path) -> None:
    """Three pages: summary text, a revenue table, a bar chart of installations."""
    styles = getSampleStyleSheet()
    doc = SimpleDocTemplate(
        str(path), pagesize=A4, title="Northwind Solar - Q3 2026 Quarterly Report", author="dse examples"
    )
    story = [
        Paragraph("Northwind Solar", styles["Title"]),
        Paragraph("Quarterly Report, Q3 2026", styles["Heading2"]),
        Spacer(1, 12),
        Paragraph(
            "Revenue grew 9.6% over the previous quarter, driven by rooftop installations in the West "
            "region. Panel prices fell for the third quarter in a row, while inverter supply remained "
            "tight. The board approved a new battery storage line for 2027.",
            styles["BodyText"],
        ),
        Spacer(1, 8),
        Paragraph(
            "Safety: the company recorded zero lost-time incidents across 1,284 installations. "
            "Customer satisfaction rose to 4.6 out of 5.",
            styles["BodyText"],
        ),
        PageBreak(),
        Paragraph("Revenue by region (thousand EUR)", styles["Heading2"]),
        Spacer(1, 12),
    ]
    rows = [["Region", "Q3 2026", "Q2 2026", "Change %"]] + [[r, str(a), str(b), f"{c:+.1f}"] for r, a, b, c in REGIONS]
    table = Table(rows, colWidths=[120, 90, 90, 90])
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#1f4e79")),
                ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
                ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#eaf1fb")]),
            ]
        )
    )
    story += [table, PageBreak(), Paragraph("Installations per month", styles["Heading2"])]
    drawing = Drawing(400, 260)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 50, 40, 320, 180
    chart.data = INSTALLS
    chart.categoryAxis.categoryNames = MONTHS
    chart.valueAxis.valueMin, chart.valueAxis.valueMax = 0, 180
    chart.bars[0].fillColor = colors.HexColor("#f2a900")
    chart.bars[1].fillColor = colors.HexColor("#2e8b57")
    drawing.add(chart)
    drawing.add(String(60, 235, "Rooftop (orange) vs. utility-scale (green)", fontSize=10))
    story.append(drawing)
    doc.build(story)


def make_slides(path: Path) -> None:
    """Four slides: title, roadmap bullets, a pricing table, a column chart."""
    prs = Presentation()
    s = prs.slides.add_slide(prs.slide_layouts[0])
    s.shapes.title.text = "Helios Battery Launch"
    s.placeholders[1].text = "Product review, November 2026"
    s = prs.slides.add_slide(prs.slide_layouts[1])
    s.shapes.title.text = "Roadmap"
    body = s.placeholders[1].text_frame
    body.text = "Pilot with 40 households in Lyon"
    for line in ["Certification by March 2027", "Retail launch in Germany and Spain", "Recycling partner signed"]:
        body.add_paragraph().text = line
    s = prs.slides.add_slide(prs.slide_layouts[5])
    s.shapes.title.text = "Pricing"
    rows = [("Model", "Capacity", "Price"), ("Helios 5", "5 kWh", "3,900 EUR"), ("Helios 10", "10 kWh", "6,800 EUR")]
    shape = s.shapes.add_table(len(rows), 3, Inches(1), Inches(2), Inches(8), Inches(2))
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            shape.table.cell(i, j).text = value
    s = prs.slides.add_slide(prs.slide_layouts[5])
    s.shapes.title.text = "Pre-orders by country"
    data = CategoryChartData()
    data.categories = ["France", "Germany", "Spain", "Italy"]
    data.add_series("Pre-orders", (320, 540, 210, 130))
    chart = s.shapes.add_chart(XL_CHART_TYPE.COLUMN_CLUSTERED, Inches(1), Inches(1.8), Inches(8), Inches(5), data).chart
    chart.plots[0].series[0].format.fill.solid()
    chart.plots[0].series[0].format.fill.fore_color.rgb = RGBColor(0xC0, 0x39, 0x2B)
    chart.has_legend = False
    chart.value_axis.tick_labels.font.size = PptPt(12)
    prs.save(str(path))


def make_docx(path: Path) -> None:
    """A two-section employee handbook with a leave table."""
    doc = Document()
    doc.core_properties.title = "Employee Handbook"
    doc.add_heading("Employee Handbook", 0)
    doc.add_heading("Travel and expenses", level=1)
    p = doc.add_paragraph(
        "Train travel is preferred for trips under four hours. Hotel costs are reimbursed up to "
        "150 EUR per night in capital cities and 110 EUR elsewhere."
    )
    p.runs[0].font.size = Pt(12)
    doc.add_heading("Annual leave", level=1)
    doc.add_paragraph("Every employee receives 27 days of paid leave. Unused days can be carried over until 31 March.")
    table = doc.add_table(rows=1, cols=2)
    table.style = "Light Grid Accent 1"
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Years of service", "Extra days"
    for years, extra in [("0-4", "0"), ("5-9", "2"), ("10+", "4")]:
        cells = table.add_row().cells
        cells[0].text, cells[1].text = years, extra
    doc.save(str(path))


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>How a wind turbine works</title>
<style>
 body { font-family: DejaVu Sans, sans-serif; margin: 32px; color: #1b2631; }
 h1 { color: #1a5276; } .note { background: #fdebd0; padding: 12px; border-left: 6px solid #e67e22; }
</style></head>
<body>
<h1>How a wind turbine works</h1>
<p>Wind turns the rotor blades, the gearbox raises the rotation speed and the generator converts it into
electricity. A modern offshore turbine has a rotor diameter of about 220 metres.</p>
<svg width="420" height="300" viewBox="0 0 420 300" role="img" aria-label="turbine diagram">
  <rect x="200" y="110" width="16" height="180" fill="#7f8c8d"/>
  <circle cx="208" cy="105" r="12" fill="#34495e"/>
  <polygon points="208,105 200,10 216,10" fill="#2980b9"/>
  <polygon points="208,105 290,150 282,164" fill="#2980b9"/>
  <polygon points="208,105 126,150 134,164" fill="#2980b9"/>
  <text x="240" y="60" font-size="14">rotor blades</text>
  <text x="230" y="250" font-size="14">tower</text>
</svg>
<p class="note">Maintenance crews inspect the blades every six months for erosion and lightning damage.</p>
</body></html>
"""


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    OUT.mkdir(parents=True, exist_ok=True)
    make_pdf_report(OUT / "quarterly_report.pdf")
    make_slides(OUT / "battery_launch.pptx")
    make_docx(OUT / "employee_handbook.docx")
    (OUT / "wind_turbine.html").write_text(HTML, encoding="utf-8")
    for f in sorted(OUT.iterdir()):
        logger.info("wrote %s (%d bytes)", f, f.stat().st_size)


if __name__ == "__main__":
    main()
