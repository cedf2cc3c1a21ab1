// Times are sent in UTC (ISO 8601) and shown in the reader's own time zone.
"use strict";
document.querySelectorAll("time[datetime]").forEach((t) => {
  const d = new Date(t.dateTime);
  if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.dateTime; }
});
